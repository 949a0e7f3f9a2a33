"""Seeded Cartesian sampling masks for retrospective undersampling.

Every generator returns a ``(ky, kx)`` = ``(H, W)`` bool tensor (``True`` = acquired) on the
k-space grid of :mod:`recon_core.physics.kspace` (centre at ``(H // 2, W // 2)``). Line masks repeat
one ky pattern along kx. The same seed always gives the same mask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(shape) < 2:
        raise ValueError(f"shape must be (ky, kx) with both >= 2, got {shape}")
    return int(shape[0]), int(shape[1])


def _lines_to_mask(lines: np.ndarray, shape: tuple[int, int]) -> Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[torch.as_tensor(lines, dtype=torch.long), :] = True
    return mask


def centre_lines(height: int, count: int) -> np.ndarray:
    """Indices of ``count`` contiguous ky lines around the centre line ``height // 2``."""
    start = height // 2 - count // 2
    return np.arange(start, start + count)


def random_lines_mask(
    shape: tuple[int, int], acceleration: float, centre_fraction: float, seed: int = 0
) -> Tensor:
    """1D random ky undersampling with a fully sampled centre (fastMRI-style).

    ``round(H / acceleration)`` lines in total: ``round(centre_fraction * H)`` contiguous
    centre lines, the rest drawn uniformly without replacement from the other lines.

    Raises:
        ValueError: if the centre alone needs more lines than the acceleration allows.
    """
    height, width = _check_shape(shape)
    if not acceleration >= 1.0:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    if not 0.0 <= centre_fraction <= 1.0:
        raise ValueError(f"centre_fraction must be in [0, 1], got {centre_fraction}")
    total = max(1, round(height / acceleration))
    centre = centre_lines(height, round(centre_fraction * height))
    if centre.size > total:
        raise ValueError(
            f"centre_fraction {centre_fraction} needs {centre.size} lines but acceleration "
            f"{acceleration} allows only {total} of {height}"
        )
    rng = np.random.default_rng(seed)
    others = np.setdiff1d(np.arange(height), centre)
    chosen = rng.choice(others, size=total - centre.size, replace=False)
    return _lines_to_mask(np.concatenate([centre, chosen]), (height, width))


def variable_density_lines_mask(
    shape: tuple[int, int], lines: int, centre: int, seed: int = 0, power: float = 2.0
) -> Tensor:
    """1D variable-density random ky undersampling: exactly ``lines`` lines in total.

    ``centre`` contiguous centre lines, the rest drawn without replacement with probability
    proportional to ``(1 - |ky - H // 2| / (H // 2 + 1)) ** power`` (denser near the centre).

    Raises:
        ValueError: for ``lines`` outside ``[centre, H]`` or a negative ``centre`` / ``power``.
    """
    height, width = _check_shape(shape)
    if centre < 0 or power < 0 or not centre <= lines <= height:
        raise ValueError(
            f"need 0 <= centre <= lines <= {height} and power >= 0, got {centre}, {lines}, {power}"
        )
    fixed = centre_lines(height, centre)
    others = np.setdiff1d(np.arange(height), fixed)
    distance = np.abs(others - height // 2) / (height // 2 + 1)
    weights = (1.0 - distance) ** power
    rng = np.random.default_rng(seed)
    chosen = rng.choice(others, size=lines - fixed.size, replace=False, p=weights / weights.sum())
    return _lines_to_mask(np.concatenate([fixed, chosen]), (height, width))


def spread_lines_mask(shape: tuple[int, int], lines: int, centre: int) -> Tensor:
    """Equispaced ky lines plus ``centre`` calibration lines, exactly ``lines`` in total: the
    ``lines - centre`` outer lines evenly spread over the lines outside the centre block."""
    height, width = _check_shape(shape)
    if centre < 0 or not centre <= lines <= height:
        raise ValueError(f"need 0 <= centre <= lines <= {height}, got centre {centre}, lines {lines}")
    fixed = centre_lines(height, centre)
    others = np.setdiff1d(np.arange(height), fixed)
    count = lines - fixed.size
    picks = np.floor((np.arange(count) + 0.5) * others.size / max(count, 1)).astype(int)
    return _lines_to_mask(np.concatenate([fixed, others[picks]]), (height, width))


def equispaced_lines_mask(
    shape: tuple[int, int], acceleration: int, calibration_lines: int = 0, offset: int | None = None
) -> Tensor:
    """Every ``acceleration``-th ky line (as a GRAPPA/SENSE scan), plus calibration lines.

    The regular lines include the centre line unless ``offset`` says otherwise; the
    ``calibration_lines`` contiguous centre lines are added on top (0: none), so the
    effective acceleration is a little below the nominal one, as on a scanner.
    """
    height, width = _check_shape(shape)
    if int(acceleration) < 1:
        raise ValueError(f"acceleration must be a positive integer, got {acceleration}")
    if not 0 <= calibration_lines <= height:
        raise ValueError(f"calibration_lines must be in [0, {height}], got {calibration_lines}")
    step = int(acceleration)
    start = (height // 2) % step if offset is None else int(offset) % step
    lines = np.union1d(np.arange(start, height, step), centre_lines(height, calibration_lines))
    return _lines_to_mask(lines, (height, width))


def partial_fourier_mask(mask: Tensor, fraction: float) -> Tensor:
    """Keep only the last ``fraction`` of the ky extent (asymmetric echo along phase encoding).

    Lines with index below ``H - ceil(fraction * H)`` are dropped, e.g. ``fraction = 5/8``
    keeps the centre and the upper half plus 1/8 of the lower half.
    """
    if not 0.5 <= fraction <= 1.0:
        raise ValueError(f"partial Fourier fraction must be in [0.5, 1], got {fraction}")
    height = mask.shape[0]
    first = height - math.ceil(fraction * height)
    out = mask.clone()
    out[:first, :] = False
    return out


def _poisson_disc_trial(
    shape: tuple[int, int], radius_at_centre: float, density_slope: float, order: np.ndarray
) -> np.ndarray:
    """Variable-density dart throwing over the grid points in ``order``.

    A candidate is accepted unless an earlier accepted point's exclusion disc covers it; the
    disc radius grows linearly with the distance from the k-space centre.
    """
    height, width = shape
    ky = (np.arange(height) - height // 2) / max(height // 2, 1)
    kx = (np.arange(width) - width // 2) / max(width // 2, 1)
    distance = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    radius = radius_at_centre * (1.0 + density_slope * distance)
    blocked = np.zeros(shape, dtype=bool)
    accepted = np.zeros(shape, dtype=bool)
    for flat in order:
        row, col = divmod(int(flat), width)
        if blocked[row, col]:
            continue
        accepted[row, col] = True
        r = radius[row, col]
        reach = math.floor(r)
        top, bottom = max(row - reach, 0), min(row + reach + 1, height)
        left, right = max(col - reach, 0), min(col + reach + 1, width)
        dy = np.arange(top, bottom)[:, None] - row
        dx = np.arange(left, right)[None, :] - col
        blocked[top:bottom, left:right] |= dy**2 + dx**2 < r**2
    return accepted


def poisson_disc_mask(
    shape: tuple[int, int],
    acceleration: float,
    seed: int = 0,
    calibration_size: int = 0,
    density_slope: float = 4.0,
    tolerance: float = 0.02,
) -> Tensor:
    """2D variable-density Poisson-disc mask with a target acceleration.

    Sample spacing grows linearly from the centre (``1 + density_slope * |k|``, ``|k|`` = 1 at
    the edge of each axis); the spacing at the centre is found by bisection so that the
    acceleration is within ``tolerance`` (relative) of the target. ``calibration_size`` > 0
    adds a fully sampled ``size x size`` centre square (0: none, nothing is fully sampled).

    Raises:
        ValueError: for an acceleration below 1 or one the bisection cannot reach.
    """
    height, width = _check_shape(shape)
    if not acceleration >= 1.0:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")
    total = height * width
    order = np.random.default_rng(seed).permutation(total)
    calibration = np.zeros((height, width), dtype=bool)
    if calibration_size > 0:
        rows = centre_lines(height, min(calibration_size, height))
        cols = centre_lines(width, min(calibration_size, width))
        calibration[np.ix_(rows, cols)] = True

    def build(radius_at_centre: float) -> np.ndarray:
        return _poisson_disc_trial((height, width), radius_at_centre, density_slope, order) | calibration

    low, high = 0.05, float(max(height, width))
    best = build(low)
    for _ in range(40):
        middle = 0.5 * (low + high)
        candidate = build(middle)
        achieved = total / max(int(candidate.sum()), 1)
        if abs(achieved / acceleration - 1.0) < abs(total / best.sum() / acceleration - 1.0):
            best = candidate
        if abs(achieved / acceleration - 1.0) <= tolerance:
            break
        if achieved < acceleration:
            low = middle
        else:
            high = middle
    achieved = total / best.sum()
    if abs(achieved / acceleration - 1.0) > 5 * tolerance:
        raise ValueError(
            f"could not reach acceleration {acceleration} on a {shape} grid (got {achieved:.2f})"
        )
    return torch.from_numpy(best)


def acceleration_of(mask: Tensor) -> float:
    """Grid size over the number of acquired samples."""
    return float(mask.numel() / max(int(mask.sum()), 1))
