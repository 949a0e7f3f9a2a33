"""Annealed Langevin sampling of the joint posterior of image and coils (docs/ALGORITHM.md section 4.5).

For noise levels ``sigma_1 > ... > sigma_L`` (geometric), ``T`` steps each, for all chains at once:

    u <- u + alpha_k ( score(u, sigma_k) - lambda_k grad_u D_1(u, c) ) + sqrt(2 alpha_k) xi
    u <- max(u, 0)                                         (real image only)
    c <- prox_{tau R}( c - tau grad_c D_1(u, c) )          (backtracking tau, recon_core.recon.joint_steps)

For a complex image the score acts per part (:mod:`recon_core.prior.complex_prior`) and ``xi`` has
unit variance in both parts.

with ``lambda_k = data_weight_scale / (sigma_n^2 + sigma_k^2)``: the likelihood of the data given
the *diffused* image ``u_k = u + sigma_k z`` is approximately Gaussian with variance
``sigma_n^2 + sigma_k^2`` (taking ``A A^H ~ I``), so the data pull is weak while the prior still
smooths at a coarse scale and reaches ``1 / sigma_n^2`` only as ``sigma_k`` falls below the noise.

The step is ``alpha_k = step_size / (L_k + lambda_k)``: a fraction of the inverse of the
drift's curvature, ``L_k`` for the prior plus ``lambda_k ||A||^2 <= lambda_k`` for the data
term. ``L_k``, the largest curvature of the prior's energy at ``sigma_k``, is measured by a few
power iterations on finite differences of the score (:func:`score_curvature`, on the first
chain, warm-started from the previous level), so the sampler needs nothing from the prior
beyond the protocol. For an exactly diffused density ``L_k <= 1 / sigma_k^2`` (Tweedie); a
product of experts on an overcomplete filter bank can exceed that several times, which a fixed
``step_size * sigma_k^2`` would not survive. Both terms are then explicit steps well inside
their stability limit for ``step_size`` below about 1.5, whatever the noise level and weight.

After the last level each chain is denoised once by Tweedie's formula
``u + sigma_L^2 score(u, sigma_L)`` (clamped at 0), removing the Langevin noise of the last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm
from recon_core.prior.base import DiffusionImagePrior, tweedie_denoise
from recon_core.recon.joint_steps import coil_step, project_image

INITIAL_COIL_STEP = 1.0
CURVATURE_ITERATIONS_FIRST = 6  # power iterations at the first noise level
CURVATURE_ITERATIONS = 2  # at later levels (warm start from the previous level)


def score_curvature(
    prior: DiffusionImagePrior, image: Tensor, sigma: float, direction: Tensor, iterations: int
) -> tuple[float, Tensor]:
    """Largest curvature of ``E(., sigma)`` at ``image`` by power iteration on score differences.

    ``H v ~ -(score(u + h v) - score(u)) / h`` with ``h = 1e-2 sigma`` (``v`` of unit RMS).

    Args:
        image: ``(1, H, W)`` the point.
        direction: ``(1, H, W)`` start vector (the previous level's result).

    Returns:
        ``(L, v)``: the estimate ``||H v|| / ||v||`` and the improved direction.
    """
    step = 1e-2 * sigma
    base = prior.score(image, sigma)
    curvature = 0.0
    vector = direction / direction.abs().pow(2).mean().sqrt().clamp_min(1e-30)
    for _ in range(iterations):
        product = -(prior.score(image + step * vector, sigma) - base) / step
        norm = float(product.abs().pow(2).mean().sqrt())
        curvature = norm  # ||H v|| / ||v|| with ||v||_rms = 1
        if not norm > 0.0:
            break
        vector = product / norm
    return curvature, vector


def unit_noise(like: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal noise shaped like ``like``; complex: each part has unit variance."""
    noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return noise * math.sqrt(2.0) if like.is_complex() else noise


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """``levels`` noise levels from ``sigma_max`` down to ``sigma_min``, evenly spaced in log."""
    if levels == 1:
        return [float(sigma_min)]
    ratio = math.log(sigma_min / sigma_max) / (levels - 1)
    return [float(sigma_max * math.exp(ratio * k)) for k in range(levels)]


@dataclass(frozen=True)
class SamplerResult:
    """``samples``: ``(B, H, W)`` final images of the chains (float32 or complex64);
    ``coils``: ``(B, C, H, W)``."""

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
    clamp_every_step: bool = True,
    progress: Callable[[int, int], None] | None = None,
    coil_order: int = 1,
    coil_anchor: Tensor | None = None,
) -> SamplerResult:
    """Run the chains; every batch entry of ``image`` / ``coils`` is one chain.

    Args:
        image: ``(B, H, W)`` start images (already perturbed as the caller wants).
        coils: ``(B, C, H, W)`` start coil maps.
        sigmas: noise levels ``sigma_k``, decreasing.
        weights: data weights ``lambda_k``, one per level.
        steps_per_level: ``T``.
        step_size: ``alpha_k = step_size / (L_k + lambda_k)`` (``L_k`` measured, see above).
        coil_smoothness: ``mu``.
        generator: seeded generator on the device of ``image`` (same seed, same samples).
        coil_update_interval: update the coils every this many Langevin steps.
        final_denoise: apply Tweedie's denoiser at ``sigma_L`` after the last step.
        clamp_every_step: project onto ``u >= 0`` after every step (else only at the end).
        progress: called with ``(done, total)`` after every step.
        coil_order: order ``p`` of the coil smoothness prior.
        coil_anchor: ``(C, H, W)`` maps the coil smoothness prior is centred on, or ``None``.
    """
    if len(sigmas) != len(weights) or len(sigmas) == 0:
        raise ValueError(f"need one weight per sigma, got {len(sigmas)} sigmas and {len(weights)} weights")
    batch = image.shape[0]
    coil_steps = torch.full((batch,), INITIAL_COIL_STEP, device=image.device)
    residual = data_term.residual(image, coils)
    total = len(sigmas) * steps_per_level
    done = 0
    direction = torch.randn(image[:1].shape, generator=generator, device=image.device, dtype=image.dtype)
    for level, (sigma, weight) in enumerate(zip(sigmas, weights, strict=True)):
        iterations = CURVATURE_ITERATIONS_FIRST if level == 0 else CURVATURE_ITERATIONS
        curvature, direction = score_curvature(prior, image[:1], sigma, direction, iterations)
        alpha = step_size / (curvature + weight)
        for _ in range(steps_per_level):
            drift = prior.score(image, sigma) - data_term.grad_image(image, coils, weight, residual)
            noise = unit_noise(image, generator)
            image = image + alpha * drift + math.sqrt(2.0 * alpha) * noise
            if clamp_every_step:
                image = project_image(image)
            done += 1
            if done % coil_update_interval == 0:
                result = coil_step(
                    data_term, image, coils, coil_steps, coil_smoothness, order=coil_order, anchor=coil_anchor
                )
                coils, coil_steps, residual = result.coils, result.step, result.residual
            else:
                residual = data_term.residual(image, coils)
            if progress is not None:
                progress(done, total)
    if final_denoise:
        image = tweedie_denoise(prior.score, image, sigmas[-1])
    image = project_image(image)
    return SamplerResult(samples=image, coils=coils, steps=total)
