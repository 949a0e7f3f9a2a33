""".dockerignore keeps data, git history, tests and caches out of the build context and lets the
Dockerfile's needs in, with Docker's own matching rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from docker_context import context_files, is_excluded, read_dockerignore

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
