"""Annealed Langevin sampling of the joint posterior of image and coils (ALGORITHM.md section 4).

For noise levels ``sigma_1 > ... > sigma_L`` (geometric), ``T`` steps each, for all chains at once:

    u <- u + alpha_k ( score(u, sigma_k) - lambda_k grad_u D_1(u, c) ) + sqrt(2 alpha_k) xi
    u <- max(u, 0)
    c <- prox_{tau R}( c - tau grad_c D_1(u, c) )          (backtracking tau, recon_core.joint_steps)

with ``alpha_k = step_size * sigma_k^2`` and ``lambda_k = data_weight_scale / (sigma_n^2 + sigma_k^2)``:
the likelihood of the data given the *diffused* image ``u_k = u + sigma_k z`` is approximately
Gaussian with variance ``sigma_n^2 + sigma_k^2`` (taking ``A A^H ~ I``), so the data pull is weak
while the prior still smooths at a coarse scale and reaches ``1 / sigma_n^2`` only as
``sigma_k`` falls below the noise. It also keeps ``alpha_k lambda_k <= step_size`` so the
explicit data step stays stable for any noise level.

After the last level each chain is denoised once by Tweedie's formula
``u + sigma_L^2 score(u, sigma_L)`` (clamped at 0), removing the Langevin noise of the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.data_term import JointDataTerm
from recon_core.joint_steps import coil_step
from recon_core.prior.base import DiffusionImagePrior

INITIAL_COIL_STEP = 1.0


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """``levels`` noise levels from ``sigma_max`` down to ``sigma_min``, evenly spaced in log."""
    if levels == 1:
        return [float(sigma_min)]
    ratio = math.log(sigma_min / sigma_max) / (levels - 1)
    return [float(sigma_max * math.exp(ratio * k)) for k in range(levels)]


@dataclass(frozen=True)
class SamplerResult:
    """``samples``: ``(B, H, W)`` float32 final images of the chains; ``coils``: ``(B, C, H, W)``."""

    samples: Tensor
    coils: Tensor
    steps: int


def sample_posterior(
    data_term: JointDataTerm,
    prior: DiffusionImagePrior,
    image: Tensor,
    coils: Tensor,
    sigmas: Sequence[float],
    weights: Sequence[float],
    steps_per_level: int,
    step_size: float,
    coil_smoothness: float,
    generator: torch.Generator,
    coil_update_interval: int = 1,
    final_denoise: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> SamplerResult:
    """Run the chains; every batch entry of ``image`` / ``coils`` is one chain.

    Args:
        image: ``(B, H, W)`` start images (already perturbed as the caller wants).
        coils: ``(B, C, H, W)`` start coil maps.
        sigmas: noise levels ``sigma_k``, decreasing.
        weights: data weights ``lambda_k``, one per level.
        steps_per_level: ``T``.
        step_size: ``alpha_k = step_size * sigma_k^2``.
        coil_smoothness: ``mu``.
        generator: seeded generator on the device of ``image`` (same seed, same samples).
        coil_update_interval: update the coils every this many Langevin steps.
        final_denoise: apply Tweedie's denoiser at ``sigma_L`` after the last step.
        progress: called with ``(done, total)`` after every step.
    """
    if len(sigmas) != len(weights) or len(sigmas) == 0:
        raise ValueError(f"need one weight per sigma, got {len(sigmas)} sigmas and {len(weights)} weights")
    batch = image.shape[0]
    coil_steps = torch.full((batch,), INITIAL_COIL_STEP, device=image.device)
    residual = data_term.residual(image, coils)
    total = len(sigmas) * steps_per_level
    done = 0
    for sigma, weight in zip(sigmas, weights, strict=True):
        alpha = step_size * sigma**2
        for _ in range(steps_per_level):
            drift = prior.score(image, sigma) - data_term.grad_image(image, coils, weight, residual)
            noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
            image = (image + alpha * drift + math.sqrt(2.0 * alpha) * noise).clamp_min(0.0)
            done += 1
            if done % coil_update_interval == 0:
                result = coil_step(data_term, image, coils, coil_steps, coil_smoothness)
                coils, coil_steps, residual = result.coils, result.step, result.residual
            else:
                residual = data_term.residual(image, coils)
            if progress is not None:
                progress(done, total)
    if final_denoise:
        image = (image + sigmas[-1] ** 2 * prior.score(image, sigmas[-1])).clamp_min(0.0)
    return SamplerResult(samples=image, coils=coils, steps=total)
