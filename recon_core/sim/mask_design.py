"""Learned Cartesian sampling patterns: a one-step Tweedie posterior mean, optimised end to end.

After "Optimizing Sampling Patterns for Compressed Sensing MRI with Diffusion Generative
Models" (arXiv 2306.03284), for 1D undersampling of the phase-encode lines (ky, the first
image axis ``H``; readout along ``W``, fully sampled).

One training example: a clean image ``x0`` ``(H, W)`` (real, max about 1), smooth coils ``s``
``(C, H, W)`` with ``sum_c |s_c|^2 = 1``, a diffusion level ``sigma`` and line weights ``m``
``(H,)`` in [0, 1] (``True`` / 1 = acquired). The data are ``y_c = F(s_c x0) + n_c`` on every
line (``n`` white, std ``noise_std`` per real component); ``m`` selects what was measured.

The estimate (:func:`tweedie_posterior_mean`): the prior's Tweedie denoiser of the diffused
image ``x_t = x0 + sigma z``, ``D = x_t + sigma^2 score(x_t, sigma)``, then the data
consistency of a Gaussian posterior around it,

    x_hat = argmin_x ||x - D||^2 / sigma^2 + ||W^(1/2) (F S x - y)||^2 / noise_std^2,
    W = diag(m) on the lines,

solved by a fixed number of conjugate-gradient steps started at ``D`` (so ``m = 0`` gives
``x_hat = D`` exactly). ``x_hat`` is differentiable in ``m``; ``D`` does not depend on ``m``.

The pattern (:func:`straight_through_lines`): logits ``theta`` ``(H,)``; the forward pass
takes the top-N lines of ``theta + Gumbel noise`` (exactly N, plus any forced centre
lines), the backward pass the gradient of a sigmoid relaxation around the N-th value at
temperature ``tau`` (Gumbel straight-through). :func:`design_mask` minimises
``E ||x_hat - x0||^2`` over training images, coils and levels with Adam; the estimates live in
:mod:`recon_core.sim.mask_estimates` (``estimator="data"``: a few Tweedie + data-consistency steps
from the data alone instead). The logits start at a variable-density profile and are mirrored
about the centre; the best of the top-N pattern and a few Gumbel draws on validation examples is
returned. Measured on the held-out brain: ``docs/sampling.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from recon_core.prior.base import DiffusionImagePrior
from recon_core.sim.mask_estimates import (
    DifferentiableScore,
    simulate_batch,
    tweedie_posterior_mean,
    unrolled_posterior_mean,
)
from recon_core.sim.masks import centre_lines

MIN_SIDE = 16
"""The smallest image side the prior's filters (up to 17 x 17 taps) are used on here."""
MAX_SIDE = 2048


@dataclass(frozen=True)
class DesignConfig:
    """Settings of :func:`design_mask`.

    Attributes:
        lines: N, the number of ky lines to acquire (forced centre lines included).
        centre: contiguous centre lines forced into the pattern (0: none forced).
        steps: Adam steps.
        batch: training images per step.
        learning_rate: Adam step size on the logits.
        temperature: ``(start, end)`` of the relaxation temperature, geometric in between.
        sigmas: diffusion levels of the one-step estimate (normalised image units), drawn
            uniformly per image (a fixed set, so the tabulated prior builds each table once).
        noise_std: measurement noise std per real k-space component (normalised units; images
            scaled to max 1). 4e-4 is a high-SNR 2D protocol's (the held-out brain: 3.4e-4); at
            0.002 the patterns learned that high frequencies do not pay (docs/sampling.md).
        cg_iterations: conjugate-gradient steps of the data consistency.
        estimator: ``"diffused"``: the one-step estimate from a diffused image
            (:func:`tweedie_posterior_mean`, level drawn from ``sigmas``); ``"data"``: from the
            data alone (:func:`unrolled_posterior_mean` over ``unrolled_levels``).
        unrolled_levels: the Tweedie levels of the ``"data"`` estimator, in order.
        initial_density: the logits start at ``p log(1 - |k|)`` (``|k|`` the line's distance
            from the centre over ``H // 2 + 1``), so that the first Gumbel draws are
            variable-density random patterns of power ``p`` (0: all logits 0, uniform draws).
        symmetric: a line and its mirror about the centre share one logit (their Gumbel noise
            differs), so the pattern does not learn to favour one half of k-space.
        candidates: at the end, the top-N pattern of the logits and this many Gumbel draws from
            them are scored on a fixed validation batch of ``validation_batch`` new examples
            and the best is returned.
        seed: seeds the logits' noise, the images, coils and levels drawn (deterministic).
    """

    lines: int
    centre: int = 0
    steps: int = 300
    batch: int = 2
    learning_rate: float = 0.1
    temperature: tuple[float, float] = (1.0, 0.1)
    sigmas: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
    noise_std: float = 0.0004
    cg_iterations: int = 6
    estimator: Literal["diffused", "data"] = "diffused"
    unrolled_levels: tuple[float, ...] = (0.1, 0.05, 0.02)
    initial_density: float = 2.0
    symmetric: bool = True
    candidates: int = 32
    validation_batch: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.cg_iterations < 1 or self.validation_batch < 1:
            raise ValueError("steps must be >= 0; batch, validation_batch and cg_iterations >= 1")
        if self.candidates < 0 or self.initial_density < 0:
            raise ValueError("candidates and initial_density must be >= 0")
        if not self.learning_rate > 0 or min(self.temperature) <= 0 or len(self.temperature) != 2:
            raise ValueError("learning_rate and both temperatures must be > 0")
        if not self.sigmas or min(self.sigmas) <= 0 or not self.noise_std > 0:
            raise ValueError("sigmas and noise_std must be > 0")
        if (
            self.estimator not in ("diffused", "data")
            or not self.unrolled_levels
            or min(self.unrolled_levels) <= 0
        ):
            raise ValueError(
                f"estimator must be 'diffused' or 'data' with levels > 0, got {self.estimator!r}"
            )


def check_design(shape: tuple[int, int], lines: int, centre: int = 0) -> tuple[int, int]:
    """Validate an ``(H, W)`` = ``(ky lines, readout)`` grid and a line budget.

    Raises:
        ValueError: for a shape outside ``[MIN_SIDE, MAX_SIDE]`` per side or not 2D, ``lines``
            below 1 or above ``H``, or ``centre`` outside ``[0, lines]``.
    """
    if len(shape) != 2:
        raise ValueError(f"shape must be (ky, kx), got {tuple(shape)}")
    height, width = int(shape[0]), int(shape[1])
    if not (MIN_SIDE <= height <= MAX_SIDE and MIN_SIDE <= width <= MAX_SIDE):
        raise ValueError(
            f"shape {height} x {width}: the prior is used on images with sides in [{MIN_SIDE}, {MAX_SIDE}]"
        )
    if lines < 1:
        raise ValueError(f"the number of lines must be >= 1, got {lines}")
    if lines > height:
        raise ValueError(f"cannot acquire {lines} lines: the grid has only {height} phase-encode lines")
    if not 0 <= centre <= lines:
        raise ValueError(f"centre lines must be in [0, {lines}] (the line budget), got {centre}")
    return height, width


def forced_lines(height: int, centre: int) -> Tensor:
    """``(H,)`` bool: the ``centre`` contiguous lines around ``H // 2``."""
    forced = torch.zeros(height, dtype=torch.bool)
    if centre > 0:
        forced[torch.as_tensor(centre_lines(height, centre))] = True
    return forced


def straight_through_lines(
    logits: Tensor,
    count: int,
    temperature: float,
    forced: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Gumbel straight-through top-N line selection.

    Args:
        logits: ``(H,)`` real scores, one per ky line.
        count: N, lines to select in total (``forced`` ones included).
        temperature: relaxation temperature of the backward pass (> 0).
        forced: ``(H,)`` bool lines always selected, or ``None``.
        generator: draws the Gumbel noise; ``None`` selects the top-N of ``logits`` (no noise).

    Returns:
        ``(H,)`` float mask: exactly ``count`` ones and zeros elsewhere in the forward pass;
        its gradient is that of ``sigmoid((theta + g - t) / temperature)``, ``t`` midway
        between the N-th and (N+1)-th perturbed free score.
    """
    height = logits.shape[0]
    forced = torch.zeros(height, dtype=torch.bool, device=logits.device) if forced is None else forced
    free = count - int(forced.sum())
    if not 0 <= free <= height - int(forced.sum()):
        raise ValueError(f"cannot select {count} lines with {int(forced.sum())} forced of {height}")
    perturbed = logits
    if generator is not None:
        uniform = torch.rand(height, generator=generator, dtype=logits.dtype).to(logits.device)
        perturbed = logits - torch.log(-torch.log(uniform.clamp(1e-12, 1.0 - 1e-7)))
    candidates = perturbed.detach().masked_fill(forced, -math.inf)
    ranked = torch.sort(candidates, descending=True).values
    hard = forced.clone()
    if free > 0:
        hard[torch.topk(candidates, free).indices] = True
    upper = ranked[free - 1] if free > 0 else ranked[0] + 1.0
    lower = ranked[free] if free < height - int(forced.sum()) else upper - 1.0
    threshold = 0.5 * (upper + lower)
    soft = torch.sigmoid((perturbed - threshold) / temperature).masked_fill(forced, 1.0)
    hard_float = hard.to(logits.dtype)
    return hard_float + (soft - soft.detach())  # exactly hard in the forward pass


@dataclass(frozen=True)
class DesignResult:
    """What :func:`design_mask` returns: ``mask`` ``(H,)`` bool with exactly N ``True``;
    ``logits`` ``(H,)`` (symmetrised where configured); ``losses`` the training loss per step;
    ``validation_losses`` the validation loss of each final candidate (the top-N pattern first)."""

    mask: Tensor
    logits: Tensor
    losses: tuple[float, ...]
    validation_losses: tuple[float, ...] = ()


def initial_logits(height: int, power: float) -> Tensor:
    """``(H,)`` logits ``power * log(1 - |k|)``, ``|k| = |i - H // 2| / (H // 2 + 1)``."""
    distance = (torch.arange(height) - height // 2).abs() / (height // 2 + 1)
    return power * torch.log1p(-distance)


def mirrored(logits: Tensor) -> Tensor:
    """``(H,)`` logits averaged with their mirror about the centre line ``H // 2`` (a line
    without a mirror on the grid keeps its own)."""
    height = logits.shape[0]
    index = torch.arange(height)
    partner = 2 * (height // 2) - index
    partner = torch.where((partner >= 0) & (partner < height), partner, index)
    return 0.5 * (logits + logits[partner])


def design_mask(
    prior: DiffusionImagePrior,
    draw_batch: Callable[[int, torch.Generator], tuple[Tensor, Tensor]],
    shape: tuple[int, int],
    config: DesignConfig,
    progress: Callable[[int, float], None] | None = None,
) -> DesignResult:
    """Learn which ``config.lines`` of the ``H`` ky lines to acquire.

    Args:
        prior: the image prior.
        draw_batch: ``(batch, generator) -> (images (B, H, W) real or complex, coils (B, C, H, W)
            complex)``.
        shape: ``(H, W)``.
        config: the settings.
        progress: called as ``progress(step, loss)`` after every step.
    """
    height, _ = check_design(shape, config.lines, config.centre)
    generator = torch.Generator().manual_seed(config.seed)
    forced = forced_lines(height, config.centre)
    parameters = initial_logits(height, config.initial_density).requires_grad_(True)
    optimiser = torch.optim.Adam([parameters], lr=config.learning_rate)
    levels = torch.tensor(config.sigmas, dtype=torch.float32)
    start, end = config.temperature
    score = DifferentiableScore(prior)

    def effective() -> Tensor:
        return mirrored(parameters) if config.symmetric else parameters

    def loss_of(
        mask: Tensor, images: Tensor, coils: Tensor, sigma: Tensor, batch_generator: torch.Generator
    ) -> Tensor:
        diffused, kspace = simulate_batch(images, coils, sigma, config.noise_std, batch_generator)
        if config.estimator == "data":
            estimate = unrolled_posterior_mean(
                score,
                mask,
                coils,
                kspace,
                config.unrolled_levels,
                config.noise_std,
                config.cg_iterations,
                images.is_complex(),
            )
        else:
            estimate = tweedie_posterior_mean(
                prior, diffused, sigma, mask, coils, kspace, config.noise_std, config.cg_iterations
            )
        return (estimate - images).abs().square().mean()

    losses = []
    for step in range(config.steps):
        temperature = start * (end / start) ** (step / max(config.steps - 1, 1))
        images, coils = draw_batch(config.batch, generator)
        sigma = levels[torch.randint(len(levels), (images.shape[0],), generator=generator)]
        mask = straight_through_lines(effective(), config.lines, temperature, forced, generator)
        loss = loss_of(mask, images, coils, sigma, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, losses[-1])
    with torch.no_grad():
        final_logits = effective().detach()
        candidates = [straight_through_lines(final_logits, config.lines, 1.0, forced, None) > 0.5]
        candidates += [
            straight_through_lines(final_logits, config.lines, 1.0, forced, generator) > 0.5
            for _ in range(config.candidates)
        ]
        validation = torch.Generator().manual_seed(config.seed + 1)
        images, coils = draw_batch(config.validation_batch, validation)
        sigma = levels[torch.randint(len(levels), (images.shape[0],), generator=validation)]
        state = validation.get_state()
        scores = []
        for candidate in candidates:
            validation.set_state(state)  # the same noise for every candidate
            scores.append(float(loss_of(candidate.to(torch.float32), images, coils, sigma, validation)))
    best = min(range(len(candidates)), key=scores.__getitem__)
    return DesignResult(
        mask=candidates[best],
        logits=final_logits.clone(),
        losses=tuple(losses),
        validation_losses=tuple(scores),
    )
