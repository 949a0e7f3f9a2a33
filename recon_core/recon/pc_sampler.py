"""Predictor-corrector posterior sampling of image and coils, ScoreMRI style (docs/ALGORITHM.md 4.6).

Chung & Ye, "Score-based diffusion models for accelerated MRI" (Med. Image Anal. 2022): the
reverse variance-exploding SDE ``dx = -d[sigma^2] grad log p_sigma(x | y) + dw`` is integrated
from ``sigma_1`` (at the scale of the normalised image) down to ``sigma_N`` (the noise level),
for all chains of the batch at once. At each level ``k = 1 .. N - 1``:

* **predictor** (Euler-Maruyama step of the reverse SDE, ``delta = sigma_k^2 - sigma_{k+1}^2``)::

      u <- u + delta * score(u, sigma_k)
      u <- u - delta * lambda_k grad_u D_1(u, c)                     (data consistency)
      u <- u + sqrt(delta) xi

* **corrector** (``corrector_steps`` Langevin steps at ``sigma_{k+1}``, step from the
  signal-to-noise rule of Song et al. ``eps = 2 (snr ||xi|| / ||score||)^2`` per chain, capped
  at ``CORRECTOR_DATA_GAIN / lambda_{k+1}``)::

      u <- u + eps * score(u, sigma_{k+1})
      u <- u - eps * lambda_{k+1} grad_u D_1(u, c)                   (data consistency)
      u <- u + sqrt(2 eps) xi

* **coils** of every chain: one backtracking proximal-gradient step on ``D_1 + R(c)``
  (:func:`recon_core.recon.joint_steps.coil_step`) every ``coil_update_interval`` moves, so that each
  chain carries its own coil estimate and the coil uncertainty enters the spread.

The data consistency is the gradient step on the noise-aware likelihood of the *diffused* image,
``lambda_k = data_weight_scale / (sigma_n^2 + sigma_k^2)`` (as :mod:`recon_core.recon.sampler`): a
splitting of the conditional SDE's drift into prior and data parts with the same time step,
the move's noise added after both. Along a measured direction (curvature ``lambda``, gain
``g = t lambda``) a corrector then samples the variance ``1 / (lambda (1 - g / 2))``, at most
``1 / (1 - CORRECTOR_DATA_GAIN / 2)`` (5 %) too wide; adding the noise *before* the data step
(ScoreMRI's order) would shrink it by the data step too and give ``(1 - g)^2 / (1 - g / 2)``
(0.71 at ``g = 0.2``, measured on the Gaussian test problem). The data gain is capped at 1 in
any case. For a Gaussian prior and a linear measurement the chains sample the closed-form
posterior (``tests/recon/test_pc_sampler.py``).

For a complex image ``xi`` has unit variance in both parts (:func:`recon_core.recon.sampler.unit_noise`);
a real image is kept non-negative after every move.

Cost per chain: ``(N - 1) (1 + corrector_steps)`` score evaluations and as many forward /
adjoint model pairs, plus ``(N - 1)(1 + corrector_steps) / coil_update_interval`` coil steps
(each one forward model and an exact smoothness prox, more when it backtracks); the chains run
as one batch, so on a GPU the time hardly grows with their number. The reconstruction then
applies the damped data refinement to every chain's final sample
(:func:`recon_core.recon.data_consistency.refine_data_consistency`, up to 300 CG steps per chain).

Calibration (``bench/calibration.py``, README): with the shipped PoGMDM prior the std of the
chains ranks the error of their mean only weakly (Spearman 0.08-0.17 on the Berkeley brain) and
is too narrow; the spread is fine texture the prior hardly penalises, the error a bias of aliased
mid frequencies at edges. The sampler itself is exact on the Gaussian test problem.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm
from recon_core.prior.base import DiffusionImagePrior, tweedie_denoise
from recon_core.recon.joint_steps import coil_step, per_batch, project_image
from recon_core.recon.sampler import INITIAL_COIL_STEP, SamplerResult, unit_noise

DEFAULT_CORRECTOR_SNR = 0.16  # Song et al. / ScoreMRI's signal-to-noise ratio of the corrector
# Largest corrector step in units of the data term's inverse curvature 1 / lambda: an explicit
# Langevin step ``eps`` on a quadratic of curvature ``a`` samples a variance too large by
# ``1 / (1 - eps a / 2)``, i.e. at most 1 / 0.95 (5 %) along the measured directions.
CORRECTOR_DATA_GAIN = 0.1


def _batch_norm(values: Tensor) -> Tensor:
    """Euclidean norm per batch entry: ``(B,)`` (real and imaginary parts both count)."""
    return values.abs().pow(2).flatten(1).sum(dim=1).sqrt()


def data_consistency(
    data_term: JointDataTerm, image: Tensor, coils: Tensor, step: Tensor | float, weight: float
) -> Tensor:
    """``u - t lambda grad_u D_1(u, c)`` with ``t lambda`` capped at 1: the data-consistency move.

    Args:
        image: ``(B, H, W)`` (or ``(B, S, H, W)`` with several map sets).
        step: the time step ``t`` of the move it follows, a float or ``(B,)``.
        weight: ``lambda``, the data weight at the move's noise level.
    """
    step_t = torch.as_tensor(step, dtype=image.real.dtype, device=image.device)
    gain = (step_t * weight).clamp(max=1.0)
    if gain.ndim == 1:
        gain = per_batch(gain, image)
    return image - gain * data_term.grad_image(image, coils)


def langevin_step_size(score: Tensor, noise: Tensor, snr: float) -> Tensor:
    """The corrector step ``eps = 2 (snr ||xi|| / ||score||)^2`` per chain: ``(B,)``."""
    return 2.0 * (snr * _batch_norm(noise) / _batch_norm(score).clamp_min(1e-30)) ** 2


def sample_posterior_pc(
    data_term: JointDataTerm,
    prior: DiffusionImagePrior,
    image: Tensor,
    coils: Tensor,
    sigmas: Sequence[float],
    weights: Sequence[float],
    corrector_steps: int,
    snr: float,
    coil_smoothness: float,
    generator: torch.Generator,
    coil_update_interval: int | None = 1,
    final_denoise: bool = True,
    progress: Callable[[int, int], None] | None = None,
    coil_order: int = 1,
    coil_anchor: Tensor | None = None,
) -> SamplerResult:
    """Run the predictor-corrector chains; every batch entry of ``image`` / ``coils`` is one chain.

    Args:
        image: ``(B, H, W)`` start images at noise level ``sigmas[0]`` (e.g. an estimate plus
            ``sigmas[0]`` noise), real and non-negative or complex.
        coils: ``(B, C, H, W)`` start coil maps.
        sigmas: ``N >= 2`` decreasing noise levels ``sigma_k`` (normalised image units).
        weights: data weights ``lambda_k``, one per level.
        corrector_steps: Langevin corrector steps after every predictor step (0: predictor only).
        snr: the corrector's signal-to-noise ratio (ScoreMRI: 0.16).
        coil_smoothness: ``mu`` of the coil smoothness prior.
        generator: seeded generator on the device of ``image`` (same seed, same samples).
        coil_update_interval: a coil step every this many moves; ``None`` keeps the coils fixed.
        final_denoise: Tweedie's denoiser at ``sigma_N`` after the last move.
        progress: called with ``(done, total)`` after every move.
        coil_order: order ``p`` of the coil smoothness prior.
        coil_anchor: ``(C, H, W)`` maps the coil smoothness prior is centred on, or ``None``.
    """
    if len(sigmas) < 2 or len(sigmas) != len(weights):
        raise ValueError(f"need >= 2 levels and one weight each, got {len(sigmas)} and {len(weights)}")
    if any(later >= earlier for earlier, later in itertools.pairwise(sigmas)):
        raise ValueError(f"sigmas must decrease, got {list(sigmas)}")
    batch = image.shape[0]
    coil_steps = torch.full((batch,), INITIAL_COIL_STEP, device=image.device)
    total = (len(sigmas) - 1) * (1 + corrector_steps)
    done = 0

    def after_move(current: Tensor, current_coils: Tensor, coil_state: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal done
        done += 1
        if coil_update_interval is not None and done % coil_update_interval == 0:
            result = coil_step(
                data_term,
                current,
                current_coils,
                coil_state,
                coil_smoothness,
                order=coil_order,
                anchor=coil_anchor,
            )
            current_coils, coil_state = result.coils, result.step
        if progress is not None:
            progress(done, total)
        return current_coils, coil_state

    for level in range(len(sigmas) - 1):
        sigma, following = sigmas[level], sigmas[level + 1]
        delta = sigma**2 - following**2
        image = image + delta * prior.score(image, sigma)
        image = data_consistency(data_term, image, coils, delta, weights[level])
        image = project_image(image + math.sqrt(delta) * unit_noise(image, generator))
        coils, coil_steps = after_move(image, coils, coil_steps)
        for _ in range(corrector_steps):
            score = prior.score(image, following)
            noise = unit_noise(image, generator)
            eps = langevin_step_size(score, noise, snr).clamp(max=CORRECTOR_DATA_GAIN / weights[level + 1])
            image = data_consistency(
                data_term, image + per_batch(eps, image) * score, coils, eps, weights[level + 1]
            )
            image = project_image(image + per_batch((2.0 * eps).sqrt(), image) * noise)
            coils, coil_steps = after_move(image, coils, coil_steps)
    if final_denoise:
        image = tweedie_denoise(prior.score, image, sigmas[-1])
    return SamplerResult(samples=project_image(image), coils=coils, steps=total)
