"""Delete-a-group jackknife of the reconstruction: an error map that follows the sampling.

The std map of the posterior samplers does not predict the error of their mean (Spearman
0.1 on the Berkeley brain, and 2 std cover 15-38 % of the object, see docs/benchmarks.md): the
chains start at the MAP estimate and spread by the injected noise, while the error is the
estimator's bias along the directions the data leave open (residual aliasing of the lines that
were not acquired), which no short chain explores. The jackknife measures that sensitivity
directly. The acquired units (whole ky lines where the mask samples whole readouts, else single
k-space samples) outside the fully sampled calibration block are split at random (seeded) into
``m`` groups of nearly equal size; replicate ``i`` is the *same* reconstruction (MAP from the
zero-filled start through the whole continuation, then the data refinement) of the data with
group ``i`` left out. With ``theta`` the full-data magnitude image and ``theta_i`` the
replicates' (Tukey / Efron, delete-``d`` jackknife with ``m`` equal groups), the jackknife's
variance and bias::

    var_J  = (m - 1) / m * sum_i (theta_i - mean_i theta_i)^2
    bias_J = (m - 1) * (mean_i theta_i - theta)

and the map is the jackknife's estimate of the root-mean-square error of ``theta``,
``sqrt(var_J + bias_J^2)`` (the mean squared error is variance plus squared bias; Efron and
Stein 1981, Shao and Tu 1995), averaged over each pixel's ``3 x 3`` neighbourhood before the
root (``m = 8`` replicates give a variance whose relative error is about ``sqrt(2 / (m - 1))`` =
53 % per pixel; the average of 9 neighbours brings it to the scale of the error's own
variation, which is coherent over a few pixels). It estimates the error of ``theta`` that
comes from *which* lines were acquired; no factor is fitted. The bias term matters where the
error is mostly bias (residual aliasing that every replicate shares in part): on the Berkeley
brain, 1D random R=8, 2 of these maps covered the error on 75.9 % of the object with the
variance alone and on 88.6 % with the bias term (R=4: 98.2 % and 99.8 %; docs/benchmarks.md).
The calibration block is never left out: the coil start (ESPIRiT) and the image scale stay
those of the full data, and so does the noise level.

Measured on the Berkeley brain (``bench/calibration.py``, ``fast`` settings, 8 groups): see
docs/benchmarks.md. The replicates must start from scratch: warm-started from the full-data
estimate (20 iterations at the final level) their spread fell 3.4x short of the error on 1D
random R=8 (median ``|error| / std`` 3.6 against 1.06).

Cost: ``m + 1`` reconstructions in one batch (the full data is entry 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as functional
from torch import Tensor

from recon_core.physics.espirit import calibration_region
from recon_core.physics.operators import samples_whole_readouts

NEIGHBOURHOOD = 3  # pixels a side of the variance average


def deletion_masks(mask: Tensor, groups: int, seed: int) -> Tensor:
    """The replicates' masks: ``mask`` with one group of acquired units left out each.

    Args:
        mask: ``(H, W)`` bool sampling mask of the full data.
        groups: ``m >= 2``, the number of groups (and replicates).
        seed: seeds the random split (same seed, same groups).

    Returns:
        ``(m', H, W)`` bool, ``m' = min(m, units)``: the units are the acquired ky rows where
        the mask samples whole readouts, else the acquired samples; those of the calibration
        block (:func:`~recon_core.physics.espirit.calibration_region`) are kept in every
        replicate, unless fewer than ``m`` units lie outside it (then every acquired unit is
        eligible).

    Raises:
        ValueError: for ``groups < 2`` or fewer than 2 acquired units.
    """
    if groups < 2:
        raise ValueError(f"the jackknife needs at least 2 groups, got {groups}")
    mask = mask.to(torch.bool)
    rows = samples_whole_readouts(mask)
    acquired = mask.any(dim=-1) if rows else mask.reshape(-1)
    eligible = acquired.clone()
    region = calibration_region(mask)
    if region is not None:
        block = torch.zeros_like(mask)
        block[region.slices] = True
        eligible &= ~(block.any(dim=-1) if rows else block.reshape(-1)).to(eligible.device)
    if int(eligible.sum()) < groups:
        eligible = acquired
    units = torch.nonzero(eligible.cpu()).flatten()
    if units.numel() < 2:
        raise ValueError(
            f"the jackknife needs at least 2 acquired k-space lines or samples, got {units.numel()}"
        )
    generator = torch.Generator().manual_seed(seed)
    shuffled = units[torch.randperm(units.numel(), generator=generator)]
    parts = torch.tensor_split(shuffled, min(groups, units.numel()))
    masks = mask.unsqueeze(0).repeat(len(parts), 1, 1)
    for index, part in enumerate(parts):
        if rows:
            masks[index, part.to(mask.device)] = False
        else:
            masks[index].view(-1)[part.to(mask.device)] = False
    return masks


def jackknife_error(replicates: Tensor, estimate: Tensor) -> Tensor:
    """The jackknife's root-mean-square error of ``estimate``, ``sqrt(var_J + bias_J^2)``, with
    ``var_J + bias_J^2`` averaged over ``3 x 3`` neighbourhoods (module docstring).

    Args:
        replicates: ``(m, H, W)`` real estimates with one group left out each, ``m >= 2``.
        estimate: ``(H, W)`` the same estimate from all the data.

    Returns:
        ``(H, W)`` in the units of the images (edges: the average over the pixels inside).
    """
    count = replicates.shape[0]
    if replicates.ndim != 3 or count < 2:
        raise ValueError(f"need (m >= 2, H, W) replicates, got {tuple(replicates.shape)}")
    if estimate.shape != replicates.shape[1:]:
        raise ValueError(
            f"the estimate {tuple(estimate.shape)} must have the replicates' shape "
            f"{tuple(replicates.shape[1:])}"
        )
    mean = replicates.mean(dim=0)
    variance = (count - 1) / count * (replicates - mean).square().sum(dim=0)
    bias = (count - 1) * (mean - estimate)
    pad = NEIGHBOURHOOD // 2
    averaged = functional.avg_pool2d(
        (variance + bias.square())[None, None], NEIGHBOURHOOD, stride=1, padding=pad, count_include_pad=False
    )[0, 0]
    return averaged.sqrt()
