"""Mask generators: target accelerations, seeding, structure, and clear errors."""

from __future__ import annotations

import pytest
import torch

from recon_core.sim.masks import (
    acceleration_of,
    centre_lines,
    equispaced_lines_mask,
    partial_fourier_mask,
    poisson_disc_mask,
    random_lines_mask,
)


def _lines(mask: torch.Tensor) -> torch.Tensor:
    """Indices of acquired ky lines; also checks that each line is all-or-nothing."""
    per_line = mask.sum(dim=1)
    assert bool(((per_line == 0) | (per_line == mask.shape[1])).all())
    return torch.nonzero(per_line).flatten()


@pytest.mark.parametrize(("acceleration", "centre"), [(4.0, 0.08), (8.0, 0.04), (3.0, 0.0)])
def test_random_lines_hit_target_and_keep_centre(acceleration: float, centre: float) -> None:
    shape = (180, 230)
    mask = random_lines_mask(shape, acceleration, centre, seed=3)
    assert mask.shape == shape and mask.dtype == torch.bool
    lines = _lines(mask)
    assert lines.numel() == round(180 / acceleration)
    # the nearest whole number of lines: within half a line of the target
    assert abs(180 / acceleration_of(mask) - 180 / acceleration) <= 0.5
    expected_centre = centre_lines(180, round(centre * 180))
    assert set(expected_centre.tolist()) <= set(lines.tolist())


def test_random_lines_are_seeded() -> None:
    first = random_lines_mask((128, 64), 4.0, 0.08, seed=1)
    assert torch.equal(first, random_lines_mask((128, 64), 4.0, 0.08, seed=1))
    assert not torch.equal(first, random_lines_mask((128, 64), 4.0, 0.08, seed=2))


def test_equispaced_lines_spacing_and_calibration() -> None:
    mask = equispaced_lines_mask((180, 230), 4, calibration_lines=24)
    lines = set(_lines(mask).tolist())
    regular = set(range(90 % 4, 180, 4))
    assert regular <= lines
    assert set(centre_lines(180, 24).tolist()) <= lines
    assert len(lines) == len(regular | set(centre_lines(180, 24).tolist()))
    bare = equispaced_lines_mask((180, 230), 4)
    assert acceleration_of(bare) == pytest.approx(4.0)
    assert 90 in _lines(bare).tolist()  # the centre line is among the regular ones


def test_partial_fourier_drops_the_first_lines() -> None:
    full = torch.ones(64, 32, dtype=torch.bool)
    mask = partial_fourier_mask(full, 5 / 8)
    assert _lines(mask).tolist() == list(range(24, 64))
    combined = partial_fourier_mask(random_lines_mask((64, 32), 2.0, 0.1, seed=0), 0.75)
    assert not bool(combined[:16].any())
    assert bool(combined[32].all())  # the centre survives


@pytest.mark.parametrize(("acceleration", "calibration"), [(8.0, 0), (4.0, 12)])
def test_poisson_disc_hits_target(acceleration: float, calibration: int) -> None:
    mask = poisson_disc_mask((96, 80), acceleration, seed=5, calibration_size=calibration)
    assert mask.shape == (96, 80) and mask.dtype == torch.bool
    assert abs(acceleration_of(mask) / acceleration - 1.0) <= 0.02
    if calibration:
        rows = centre_lines(96, calibration)
        cols = centre_lines(80, calibration)
        assert bool(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all())
    # variable density: the central quarter is sampled more densely than the periphery
    centre = mask[36:60, 30:50].float().mean()
    assert float(centre) > 2.0 * float(mask.float().mean())


def test_poisson_disc_is_seeded() -> None:
    first = poisson_disc_mask((64, 64), 6.0, seed=0)
    assert torch.equal(first, poisson_disc_mask((64, 64), 6.0, seed=0))
    assert not torch.equal(first, poisson_disc_mask((64, 64), 6.0, seed=1))


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="centre_fraction"):
        random_lines_mask((64, 64), 8.0, 0.5)
    with pytest.raises(ValueError, match="acceleration"):
        random_lines_mask((64, 64), 0.5, 0.1)
    with pytest.raises(ValueError, match="calibration_lines"):
        equispaced_lines_mask((64, 64), 4, calibration_lines=100)
    with pytest.raises(ValueError, match="fraction"):
        partial_fourier_mask(torch.ones(8, 8, dtype=torch.bool), 0.3)
    with pytest.raises(ValueError, match="shape"):
        poisson_disc_mask((64,), 4.0)  # type: ignore[arg-type]
