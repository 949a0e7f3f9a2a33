"""The k-space noise level ``sigma_n`` that sets the data weight ``lambda = 1 / sigma_n^2``.

Convention: ``sigma_n`` is the standard deviation of the real part (equally of the imaginary
part) of one complex k-space noise sample, so ``E|n|^2 = 2 sigma_n^2`` and the Gaussian
log-likelihood of the data is exactly ``-(1 / (2 sigma_n^2)) ||r||^2``: ``lambda = 1 / sigma_n^2``
is the Bayes-consistent weight of ``D = (lambda / 2) ||r||^2``.

Two sources, in order of preference:

1. A noise pre-scan: after prewhitening (``recon_core.physics.prewhitening``) every coil has unit
   complex variance, ``E|n|^2 = 1``, so ``sigma_n = 1 / sqrt(2)`` exactly.
2. No pre-scan: an estimate from the acquired data themselves (:func:`estimate_noise_std`),
   from the outermost acquired k-space samples (the 10 % of acquired positions farthest from
   the centre). With several coils, the smallest eigenvalue of their ``C x C`` coil covariance:
   white noise adds ``2 sigma_n^2`` to every eigenvalue while the signal of smooth coil
   sensitivities concentrates in a few directions, so the smallest eigenvalue is the noise
   floor (as the tail singular values of an ESPIRiT calibration matrix). It is divided by the
   Marchenko-Pastur edge factor ``(1 - sqrt(C / N))^2`` (the bias of the smallest eigenvalue
   of a sample covariance of ``N`` samples). With one coil, the median absolute value of the
   real and imaginary parts, ``1.4826 * median(|v|)``. Where the outer k-space still holds
   signal in every direction (a sharp-edged synthetic object, heavily cropped readout) the
   estimate is biased upwards, which only weakens the data weight. Where the noise is
   correlated between coils (no prewhitening) the smallest eigenvalue reflects the least noisy
   coil combination, so it is biased downwards: prewhiten whenever a noise scan exists.

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
    """``sigma_n`` (per real component) from the outermost acquired k-space samples.

    Args:
        kspace: ``(C, H, W)`` complex data, zero where not acquired.
        mask: ``(H, W)`` bool sampling mask.
        outer_fraction: the fraction of acquired sample positions, farthest from the centre,
            used for the estimate.
        min_samples: at least this many positions are used (or all acquired ones if fewer).

    Returns:
        ``sigma_n`` in the units of ``kspace``.

    Raises:
        ValueError: if the selected samples give a zero noise level (noise-free synthetic
            data cannot give one: pass a noise covariance, or add noise).
    """
    if not 0.0 < outer_fraction <= 1.0:
        raise ValueError(f"outer_fraction must be in (0, 1], got {outer_fraction}")
    radius = kspace_radius(*mask.shape, device=mask.device)[mask]
    count = radius.numel()
    keep = min(count, max(min_samples, round(outer_fraction * count)))
    outer = kspace[:, mask][:, torch.topk(radius, keep).indices].to(torch.complex128)  # (C, N)
    coils = outer.shape[0]
    if coils >= 2 and keep > 4 * coils:
        covariance = outer @ outer.conj().T / keep
        smallest = float(torch.linalg.eigvalsh(covariance)[0].clamp_min(0.0))
        edge = (1.0 - math.sqrt(coils / keep)) ** 2
        estimate = math.sqrt(smallest / edge / 2.0)
    else:
        values = torch.cat([outer.real.flatten(), outer.imag.flatten()])
        estimate = MAD_TO_STD * float(values.abs().median())
    if not estimate > 0.0:
        raise ValueError(
            "cannot estimate the noise level: the outer acquired k-space samples carry no noise "
            "(noise-free data?); pass a noise covariance"
        )
    return estimate
