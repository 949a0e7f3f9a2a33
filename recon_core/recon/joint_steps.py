"""Proximal-gradient steps with backtracking, shared by the MAP solver and the sampler.

* Coil step: ``c <- prox_{tau R}( c - tau grad_c D_1(u, c) )`` on the *unweighted* data term
  ``D_1 = (1/2) ||M F(u s) - y||^2`` and ``R = (mu/2) ||grad c||^2``. Using ``D_1`` instead of
  ``lambda * D_1`` makes the coil subproblem independent of the noise level: ``mu`` is the
  smoothness relative to the data fit (coil features shorter than about ``sqrt(mu) / u``
  pixels are suppressed, ``u`` the image intensity on the normalised scale).
* Image step (MAP): ``u <- P(u - t (lambda grad_u D_1 - score(u, sigma)))`` with ``P`` the
  projection onto ``u >= 0`` for a real (magnitude) image and the identity for a complex one.

Both use one step size per batch entry (chain), grown on entry (``COIL_STEP_GROWTH``,
``STEP_GROWTH``; the image step not beyond its last measured ``1 / L_loc``) and reduced until
the step is accepted (the coil step halved, the image step to a fraction of the measured
``1 / L_loc``, at most half): the coil step by the standard sufficient-decrease test of
proximal gradient,

    f(x+) <= f(x) + <grad f(x), x+ - x> + ||x+ - x||^2 / (2 t),

the image step by a gradient-only test (see :func:`image_step`). A chain whose test still
fails after ``MAX_BACKTRACKS`` halvings keeps its old iterate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm, normalise_coil_scale, normalised_coils
from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.coil_prior import smoothness_prox

STEP_GROWTH = 1.25
# A failed image trial is retried at LIPSCHITZ_MARGIN times the measured 1 / L_loc (at most
# half the step), and the next step grows to at most GROWTH_MARGIN * LIPSCHITZ_MARGIN times it.
# The local estimate fluctuates between iterations; with these margins about 1 image step in 10
# needs a second trial (Berkeley brain, fast preset), against about 1 in 2 with plain growth
# and halving, at the same PSNR (33.43 / 45.79 dB on masks (a) / (c), before 33.43 / 45.80).
LIPSCHITZ_MARGIN = 0.9
GROWTH_MARGIN = 0.85
# The coil Lipschitz constant (about max u^2 / R^2) drifts slowly: a gentler growth wastes
# fewer trials (each costs a forward model and an exact prox).
COIL_STEP_GROWTH = 1.1
MAX_BACKTRACKS = 12


def batch_inner(a: Tensor, b: Tensor) -> Tensor:
    """Real inner product ``Re <a, b>`` per batch entry: ``(B,)``."""
    product = torch.linalg.vecdot(a.flatten(1), b.flatten(1))  # conjugates a; no temporaries
    return product.real if product.is_complex() else product


def project_image(image: Tensor) -> Tensor:
    """The image constraint: ``max(u, 0)`` for a real image, none for a complex one."""
    return image if image.is_complex() else image.clamp_min(0.0)


def per_batch(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` values shaped to broadcast over ``like`` ``(B, ...)``."""
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def _take(chosen: Tensor, candidate: Tensor, current: Tensor) -> Tensor:
    """``candidate`` for the batch entries in ``chosen`` ``(B,)``, ``current`` elsewhere (no copy
    where every entry is chosen, the common case of a step accepted at its first trial)."""
    if bool(chosen.all()):
        return candidate
    return torch.where(per_batch(chosen, candidate), candidate, current)


@dataclass(frozen=True)
class CoilStepResult:
    """Outcome of one coil step. ``residual`` is ``M F(u s) - y`` at the new coils."""

    coils: Tensor
    step: Tensor
    residual: Tensor


def coil_step(
    data_term: JointDataTerm,
    image: Tensor,
    coils: Tensor,
    step: Tensor,
    smoothness: float,
    residual: Tensor | None = None,
    order: int = 1,
    anchor: Tensor | None = None,
) -> CoilStepResult:
    """One backtracking proximal-gradient step on the coils (see the module docstring).

    Args:
        image: ``(B, H, W)`` image ``u`` (real or complex).
        coils: ``(B, C, H, W)`` complex un-normalised maps ``c``.
        step: ``(B,)`` step sizes from the previous call (grown here before the search).
        smoothness: ``mu`` of the coil smoothness prior.
        residual: ``M F(u s) - y`` at ``(image, coils)`` if already known.
        order: order ``p`` of the smoothness prior (:mod:`recon_core.prior.coil_prior`).
        anchor: ``(C, H, W)`` maps the smoothness prior is centred on (the calibration-based
            start), or ``None`` (centred on zero).

    Returns:
        New coils (rescaled so the RMS of their RSS is 1), accepted steps and the residual.
    """
    residual = data_term.residual(image, coils) if residual is None else residual
    value = data_term.value(image, coils, residual=residual)
    grad = data_term.grad_coils(image, coils, residual=residual)
    step = step * COIL_STEP_GROWTH
    new_coils, new_residual = coils, residual  # what a chain whose test never passes keeps
    accepted = torch.zeros_like(step, dtype=torch.bool)
    for _ in range(MAX_BACKTRACKS):
        step_b = per_batch(step, coils)
        candidate = smoothness_prox(coils - step_b * grad, step_b * smoothness, order, anchor)
        candidate_residual = data_term.residual(image, candidate)
        candidate_value = data_term.value(image, candidate, residual=candidate_residual)
        difference = candidate - coils
        bound = value + batch_inner(grad, difference) + batch_inner(difference, difference) / (2.0 * step)
        newly = (candidate_value <= bound * (1.0 + 1e-6)) & ~accepted
        new_coils = _take(newly, candidate, new_coils)
        new_residual = _take(newly, candidate_residual, new_residual)
        accepted |= newly
        if bool(accepted.all()):
            break
        step = torch.where(accepted, step, 0.5 * step)
    return CoilStepResult(coils=normalise_coil_scale(new_coils), step=step, residual=new_residual)


@dataclass(frozen=True)
class ImageStepResult:
    """Outcome of one MAP image step, with what the next step can reuse.

    ``residual`` is ``M F(u s) - y`` and ``gradient`` the objective's gradient, both at the
    new image (valid for the coils the step was taken with); ``gradient`` is ``None`` after an
    unchecked step (``check=False``), which never evaluates it.
    """

    image: Tensor
    step: Tensor
    residual: Tensor
    gradient: Tensor | None


def image_objective_gradient(
    data_term: JointDataTerm,
    prior: DiffusionImagePrior,
    image: Tensor,
    coils: Tensor,
    weight: Tensor | float,
    sigma: Tensor | float,
    residual: Tensor,
    maps: Tensor | None = None,
) -> Tensor:
    """``grad_u (lambda D_1(u, c) + E(u, sigma)) = lambda grad_u D_1 - score(u, sigma)``: ``(B, H, W)``
    (``maps``: ``normalised_coils(coils)`` if known)."""
    return data_term.grad_image(image, coils, weight, residual, maps) - prior.score(image, sigma)


def image_step(
    data_term: JointDataTerm,
    prior: DiffusionImagePrior,
    image: Tensor,
    coils: Tensor,
    step: Tensor,
    weight: Tensor | float,
    sigma: Tensor | float,
    residual: Tensor | None = None,
    gradient: Tensor | None = None,
    check: bool = True,
) -> ImageStepResult:
    """One projected-gradient step on ``lambda D_1(u, c) + E(u, sigma)`` (``u >= 0`` if real).

    The prior's energy is never evaluated (exactly it costs about a hundred tabulated score
    evaluations), so the step is accepted by a gradient-only (secant) test instead of a
    sufficient decrease of the objective: ``t <= 1 / L_loc`` with the local Lipschitz
    estimate ``L_loc = ||g(u+) - g(u)|| / ||u+ - u||``. For a quadratic this is exactly the
    condition that guarantees descent; the gradient at the accepted point is returned for the
    next step, so an accepted first trial costs one gradient evaluation.

    Args:
        image: ``(B, H, W)`` real and non-negative, or complex (the prior then acts per part).
        coils: ``(B, C, H, W)`` complex.
        step: ``(B,)`` step sizes from the previous call.
        weight: the data weight ``lambda`` (a float, or ``(B,)``: one per batch entry).
        sigma: the prior's noise level used as the regulariser (a float or ``(B,)``).
        residual, gradient: at ``(image, coils)`` for this ``weight`` / ``sigma`` if known.
        check: test the step (the usual path). ``False`` takes the grown step unchecked, as if
            its test had passed without a new Lipschitz estimate: one gradient evaluation
            instead of at least two (see :data:`recon_core.recon.map_solver.STEP_CHECK_INTERVAL`).
    """
    maps = normalised_coils(coils)  # the coils stay fixed in this step
    residual = data_term.residual(image, coils, maps) if residual is None else residual
    if gradient is None:
        gradient = image_objective_gradient(data_term, prior, image, coils, weight, sigma, residual, maps)
    step = step * STEP_GROWTH
    if not check:
        candidate = project_image(image - per_batch(step, image) * gradient)
        return ImageStepResult(candidate, step, data_term.residual(candidate, coils, maps), None)
    new_image, new_residual, new_gradient = image, residual, gradient
    accepted = torch.zeros_like(step, dtype=torch.bool)
    limit = torch.full_like(step, math.inf)
    for _ in range(MAX_BACKTRACKS):
        candidate = project_image(image - per_batch(step, image) * gradient)
        candidate_residual = data_term.residual(candidate, coils, maps)
        candidate_gradient = image_objective_gradient(
            data_term, prior, candidate, coils, weight, sigma, candidate_residual, maps
        )
        moved = batch_inner(candidate - image, candidate - image).sqrt()
        changed = batch_inner(candidate_gradient - gradient, candidate_gradient - gradient).sqrt()
        newly = (step * changed <= moved * (1.0 + 1e-6)) & ~accepted
        # 1 / L_loc, the largest step the secant test accepts here (no bound where nothing moved).
        measured = (changed > 0) & (moved > 0)
        local = torch.where(measured, moved / changed.clamp_min(torch.finfo(changed.dtype).tiny), math.inf)
        new_image = _take(newly, candidate, new_image)
        new_residual = _take(newly, candidate_residual, new_residual)
        new_gradient = _take(newly, candidate_gradient, new_gradient)
        limit = torch.where(newly, LIPSCHITZ_MARGIN * local, limit)
        accepted |= newly
        if bool(accepted.all()):
            break
        step = torch.where(accepted, step, torch.minimum(0.5 * step, LIPSCHITZ_MARGIN * local))
    # The next call grows the step by STEP_GROWTH, but not beyond the measured 1 / L_loc.
    step = torch.minimum(step, GROWTH_MARGIN * limit / STEP_GROWTH)
    return ImageStepResult(image=new_image, step=step, residual=new_residual, gradient=new_gradient)
