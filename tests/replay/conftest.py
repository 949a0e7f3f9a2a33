"""The synthetic raw file the replay fault tests run on."""

from __future__ import annotations

from pathlib import Path

import pytest
from replay_runs import SCAN

from gadgets.demo.synthetic import write_synthetic_raw


@pytest.fixture(scope="module")
def raw3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-slice, 2-coil, 16 x 16 synthetic raw file (a noise readout first)."""
    return write_synthetic_raw(tmp_path_factory.mktemp("raw") / "three_slices.h5", SCAN)
