"""The k-space noise level ``sigma_n`` that sets the data weight ``lambda = 1 / sigma_n^2``.

Convention: ``sigma_n`` is the standard deviation of the real part (equally of the imaginary
part) of one complex k-space noise sample, so ``E|n|^2 = 2 sigma_n^2`` and the Gaussian
log-likelihood of the data is exactly ``-(1 / (2 sigma_n^2)) ||r||^2``: ``lambda = 1 / sigma_n^2``
is the Bayes-consistent weight of ``D = (lambda / 2) ||r||^2``.

Two sources, in order of preference:

1. A noise pre-scan: after prewhitening (``recon_core.prewhitening``) every coil has unit
   complex variance, ``E|n|^2 = 1``, so ``sigma_n = 1 / sqrt(2)`` exactly.
2. No pre-scan: a robust estimate from the acquired data themselves (:func:`estimate_noise_std`):
   the median absolute value of the real and imaginary parts of the outermost acquired
   k-space samples (all coils pooled), ``sigma_n = 1.4826 * median(|v|)``. Far from the
   centre the signal of an MR image has decayed to a few outliers, which the median ignores.
   Where the outer k-space still holds signal (heavily cropped readout, or data whose image
   background was masked to zero) the estimate is biased upwards, which weakens the data
   weight slightly rather than over-fitting noise.

Both are converted to the normalised scale by dividing by the image scale factor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# 1 / Phi^{-1}(3/4): the median absolute deviation of a standard normal sample.
MAD_TO_STD = 1.482602218505602

# sigma_n of prewhitened data (unit complex variance per sample), per real component.
PREWHITENED_NOISE_STD = 1.0 / math.sqrt(2.0)


def kspace_radius(height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Normalised distance of every k-space sample from the centre ``(H // 2, W // 2)``.

    Each axis is scaled so that its edge is at 1: ``(H, W)`` float32, 0 at the centre.
    """
    ky = (torch.arange(height, device=device, dtype=torch.float32) - height // 2) / max(height // 2, 1)
    kx = (torch.arange(width, device=device, dtype=torch.float32) - width // 2) / max(width // 2, 1)
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)


def estimate_noise_std(
    kspace: Tensor, mask: Tensor, outer_fraction: float = 0.1, min_samples: int = 64
) -> float:
    """Robust ``sigma_n`` (per real component) from the outermost acquired k-space samples.

    Args:
        kspace: ``(C, H, W)`` complex data, zero where not acquired.
        mask: ``(H, W)`` bool sampling mask.
        outer_fraction: the fraction of acquired sample positions, farthest from the centre,
            used for the estimate.
        min_samples: at least this many positions are used (or all acquired ones if fewer).

    Returns:
        ``sigma_n`` in the units of ``kspace``.

    Raises:
        ValueError: if the selected samples are all exactly zero (noise-free synthetic data
            cannot give a noise level: pass one, or add noise).
    """
    if not 0.0 < outer_fraction <= 1.0:
        raise ValueError(f"outer_fraction must be in (0, 1], got {outer_fraction}")
    radius = kspace_radius(*mask.shape, device=mask.device)[mask]
    samples = kspace[:, mask]  # (C, N_acquired)
    count = radius.numel()
    keep = min(count, max(min_samples, round(outer_fraction * count)))
    outer = torch.topk(radius, keep).indices
    values = torch.cat([samples[:, outer].real.flatten(), samples[:, outer].imag.flatten()])
    estimate = MAD_TO_STD * float(values.abs().median())
    if not estimate > 0.0:
        raise ValueError(
            "cannot estimate the noise level: the outer acquired k-space samples are exactly zero "
            "(noise-free data?)"
        )
    return estimate
