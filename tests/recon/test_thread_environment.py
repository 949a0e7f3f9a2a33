"""libgomp's spin count: set by ``recon_core`` and ``gadgets`` before torch loads, unless the user chose."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from recon_core import SPIN_COUNT

PROBE = (
    "import os, {module}; "
    "print(os.environ.get('GOMP_SPINCOUNT', '-'), os.environ.get('OMP_WAIT_POLICY', '-'))"
)


def _probe(module: str, **environment: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)],
        env={**clean, **environment},
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout.strip()


@pytest.mark.parametrize("module", ["recon_core", "gadgets"])
def test_short_spin_by_default_and_the_users_choice_wins(module: str) -> None:
    assert _probe(module) == f"{SPIN_COUNT} -"
    assert _probe(module, GOMP_SPINCOUNT="5") == "5 -"
    assert _probe(module, OMP_WAIT_POLICY="PASSIVE") == "- PASSIVE"


def test_the_package_top_does_not_load_torch() -> None:
    """The setting only works if nothing imported before it loads libgomp."""
    code = "import sys, recon_core, gadgets; print('torch' in sys.modules)"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert completed.stdout.strip() == "False"
