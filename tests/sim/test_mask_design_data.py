"""Training examples of the sampling-pattern design (recon_core/sim/mask_design_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_core.sim.mask_design_data import TrainingExamples, fit_to_grid
from recon_core.sim.phantom import birdcage_coil_maps
from recon_core.training.data import ImageSource


def _extent(image: torch.Tensor) -> tuple[int, int]:
    rows = int((image > 0).any(dim=1).sum())
    cols = int((image > 0).any(dim=0).sum())
    return rows, cols


def test_fit_to_grid_keeps_pixel_size_or_fills_the_grid() -> None:
    small = np.ones((40, 30), dtype=np.float32) * 3.0
    kept = fit_to_grid(small, (100, 120), fill=0.9, enlarge=False)
    assert _extent(kept) == (40, 30) and float(kept.max()) == pytest.approx(1.0)
    filled = fit_to_grid(small, (100, 120), fill=0.9, enlarge=True)
    rows, cols = _extent(filled)
    assert rows == 90 and cols == round(30 * 90 / 40)  # the tighter axis fills 90 %, aspect kept
    assert float(filled.max()) == pytest.approx(1.0)
    large = np.ones((300, 200), dtype=np.float32)
    for enlarge in (False, True):  # larger than the grid: shrunk either way
        assert _extent(fit_to_grid(large, (100, 120), fill=0.9, enlarge=enlarge))[0] == 90


def test_steeper_falloff_localises_the_coils_and_the_default_is_unchanged() -> None:
    default = birdcage_coil_maps(8, 64, 64)
    torch.testing.assert_close(default, birdcage_coil_maps(8, 64, 64, falloff=1.0), rtol=0, atol=0)

    def contrast(maps: torch.Tensor) -> float:  # one coil's strongest over weakest sensitivity
        magnitude = maps[0].abs()
        return float(magnitude.max() / magnitude.min())

    near_steep = birdcage_coil_maps(8, 64, 64, radius=1.15, falloff=2.0)
    assert contrast(near_steep) > 3.0 * contrast(default)


def test_examples_fill_the_grid_with_normalised_coils() -> None:
    ramp = np.linspace(0.5, 1.0, 480, dtype=np.float32).reshape(20, 24)
    source = ImageSource(name="ramp", images=(ramp,))
    examples = TrainingExamples([source], (64, 80), num_coils=6)
    images, coils = examples(3, torch.Generator().manual_seed(0))
    assert images.shape == (3, 64, 80) and images.is_complex()
    assert coils.shape == (3, 6, 64, 80)
    rss = coils.abs().pow(2).sum(dim=1)  # 1 up to the RSS regulariser where the coils are weakest
    torch.testing.assert_close(rss, torch.ones(3, 64, 80), rtol=0, atol=0.02)
    rows, _ = _extent(examples.images[0])
    assert rows == round(0.9 * 64)  # enlarged to the field of view by default
