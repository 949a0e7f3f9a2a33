"""Shared fixtures: run device-aware tests on the CPU and, where present, on CUDA.

The test folders mirror the source folders (``physics/``, ``prior/``, ``recon/``, ``sim/``,
``training/``, ``gadgets/``, ``replay/``, ``docker/``); the helpers they share
(``operator_checks``, ``smooth_prior``, ``gadget_helpers``, ``fault_gadgets``) live in
``tests/helpers/``, put on ``sys.path`` here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HELPERS = Path(__file__).resolve().parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
        ],
    ),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """The device a test runs on: ``cpu`` always, ``cuda`` where a GPU is present."""
    return torch.device(request.param)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the project root; skips the test where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real scanner data not found at {SHARED_DATA}")
    return SHARED_DATA
