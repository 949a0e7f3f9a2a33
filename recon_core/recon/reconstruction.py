"""The public entry point: joint image and coil reconstruction of one 2D slice.

    result = reconstruct(kspace_slice, load_preset("balanced"), prior=None, progress=callback)
    result.image      # (H, W) float32 magnitude, in the units of the input data
    result.std        # (H, W) float32 posterior std (jackknife: RMS error), None for MAP
    result.coil_maps  # (C, H, W) complex64 RSS-normalised sensitivities
    result.info       # method, timings, noise level, data weight, scale factor, ...

The recipe (docs/ALGORITHM.md sections 1 and 4), with nothing tuned per data set, in three
stages:

1. **Prepare** (:mod:`recon_core.recon.preparation`): prewhiten with the noise covariance where
   one is known (then ``sigma_n`` is exact), otherwise estimate ``sigma_n`` from the outer
   acquired k-space (:mod:`recon_core.physics.noise_estimation`); divide the data by the
   maximum of the zero-filled RSS image; start the coils (ESPIRiT where a calibration block
   exists, else the low-passed zero-filled coil images) and the image (zero-filled combination).
2. **Solve**: MAP (:mod:`recon_core.recon.map_solver`; with ``jackknife`` also its replicates,
   :mod:`recon_core.recon.jackknife`), annealed Langevin (:mod:`recon_core.recon.sampler`) or
   predictor-corrector chains (:mod:`recon_core.recon.pc_sampler`, ``posterior_pc``) with the data weight
   ``lambda = data_weight_scale / (sigma_n^2 + sigma^2)``, then the damped data refinement
   (:mod:`recon_core.recon.data_consistency`).
3. **Summarise**: undo the scale, average the chains' coils, fill ``info``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm, normalised_coils
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator
from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.coil_prior import COIL_PRIOR_ORDER
from recon_core.recon.config import ReconConfig
from recon_core.recon.data_consistency import refine_data_consistency
from recon_core.recon.jackknife import deletion_masks, jackknife_error
from recon_core.recon.joint_steps import project_image
from recon_core.recon.map_solver import MapResult, solve_map
from recon_core.recon.pc_sampler import sample_posterior_pc
from recon_core.recon.preparation import PreparedSlice, prepare_slice, start_image
from recon_core.recon.sampler import SamplerResult, geometric_sigmas, sample_posterior, unit_noise

Progress = Callable[[int, int], None]

# Floor of the noise-tied final MAP level (normalised units): below it the shipped prior's
# potentials no longer change (their component width sigma_0 dominates).
MIN_FINAL_SIGMA = 2e-4


@dataclass(frozen=True)
class ReconResult:
    """What :func:`reconstruct` returns.

    Attributes:
        image: ``(H, W)`` float32 magnitude in the units of the input k-space (the internal
            normalisation is undone). Where the slice carries a noise covariance and is not yet
            prewhitened, it is prewhitened first and the image is in those whitened units
            (noise of unit complex variance per k-space sample, i.e. SNR units, as Gadgetron's
            own reconstructions after noise adjustment). The posterior mean for
            ``method="posterior"``, the MAP estimate otherwise.
        std: ``(H, W)`` float32 pixel-wise posterior standard deviation (same units; for
            ``method="jackknife"`` the jackknife's estimate of the image's error), or ``None``
            for the MAP method.
        coil_maps: ``(C, H, W)`` complex64 RSS-normalised sensitivities ``s_c``.
        info: diagnostics: ``method``, ``device``, ``scale_factor``, ``noise_std`` (input
            units, per real component), ``noise_std_normalised``, ``noise_source``
            (``"prescan"`` or ``"estimated"``), ``data_weight`` (final lambda), ``sigmas``
            (first, last), ``iterations``, ``num_chains``, ``seed``, ``acceleration``,
            ``timings_s`` (``setup``, ``solve``, ``total``).
    """

    image: Tensor
    std: Tensor | None
    coil_maps: Tensor
    info: dict[str, Any] = field(default_factory=dict)


def final_map_sigma(config: ReconConfig, sigma_n: float) -> float:
    """The MAP regulariser's last prior level: ``map_sigma`` if set (> 0), else tied to the
    data's noise, ``map_sigma_noise_factor * sigma_n`` (normalised units), kept within
    ``[MIN_FINAL_SIGMA, map_sigma_start]``."""
    if config.map_sigma > 0.0:
        return config.map_sigma
    return min(max(config.map_sigma_noise_factor * sigma_n, MIN_FINAL_SIGMA), config.map_sigma_start)


def _chain_levels(config: ReconConfig, sigma_n: float) -> tuple[float, float]:
    """``(sigma_max, sigma_min)`` of the posterior chains: as set, or (0, 0) tied to the final
    MAP level ``m``: ``(2 m, m)``; ``sigma_min`` 0 alone is ``m``, with ``sigma_max`` raised to
    at least ``2 m`` (noisy data, whose ``m`` exceeds the set ``sigma_max``)."""
    level = final_map_sigma(config, sigma_n)
    if config.sigma_max > 0.0 and config.sigma_min > 0.0:
        return config.sigma_max, config.sigma_min
    if config.sigma_max > 0.0:
        return max(config.sigma_max, 2.0 * level), level
    return 2.0 * level, level


def _combine_sets(images: Tensor, extra_maps: Tensor | None) -> Tensor:
    """Magnitude ``(B, H, W)`` of ``(B, H, W)`` images, or the root sum of squares over the map
    sets of ``(B, S, H, W)`` images (soft SENSE)."""
    if extra_maps is None:
        return images.abs()
    return images.abs().square().sum(dim=1).sqrt()


def _data_weights(config: ReconConfig, sigma_n: float, sigmas: list[float]) -> list[float]:
    """The data weight ``lambda = data_weight_scale / (sigma_n^2 + sigma^2)`` at each prior level."""
    return [config.data_weight_scale / (sigma_n**2 + sigma**2) for sigma in sigmas]


def map_schedule(config: ReconConfig, sigma_n: float) -> tuple[list[float], list[float]]:
    """MAP prior noise levels (geometric from ``map_sigma_start`` to ``map_sigma`` over the
    first ``map_continuation`` of the iterations, then constant) and the data weight of each
    iteration."""
    falling = max(1, round(config.map_continuation * config.map_iterations))
    final = final_map_sigma(config, sigma_n)
    sigmas = geometric_sigmas(config.map_sigma_start, final, falling) if falling > 1 else []
    sigmas = sigmas + [final] * (config.map_iterations - len(sigmas))
    return sigmas, _data_weights(config, sigma_n, sigmas)


def _offset_progress(progress: Progress | None, offset: int, total: int) -> Progress | None:
    """``progress`` for one phase of a two-phase run: ``(offset + done, total)``."""
    if progress is None:
        return None
    return lambda done, _phase_total: progress(offset + done, total)


def _run_chains(
    config: ReconConfig,
    data_term: JointDataTerm,
    prior: DiffusionImagePrior,
    image: Tensor,
    coils: Tensor,
    sigmas: list[float],
    weights: list[float],
    generator: torch.Generator,
    progress: Progress | None,
    coil_anchor: Tensor | None,
) -> SamplerResult:
    """The posterior chains of ``config.method``: annealed Langevin or predictor-corrector."""
    shared: dict[str, Any] = {
        "coil_update_interval": config.coil_update_interval,
        "final_denoise": config.final_denoise,
        "progress": progress,
        "coil_order": COIL_PRIOR_ORDER,
        "coil_anchor": coil_anchor,
    }
    problem = (data_term, prior, image, coils, sigmas, weights)
    if config.method == "posterior_pc":
        moves = (config.corrector_steps, config.corrector_snr, config.coil_smoothness, generator)
        return sample_posterior_pc(*problem, *moves, **shared)
    moves = (config.steps_per_level, config.step_size, config.coil_smoothness, generator)
    return sample_posterior(*problem, *moves, clamp_every_step=config.clamp_every_step, **shared)


@dataclass(frozen=True)
class Solution:
    """Stage 2's output on the normalised scale: the image (and std), the final coils
    ``(B, C, H, W)``, the schedule used and the iterations run."""

    image: Tensor
    std: Tensor | None
    coils: Tensor
    sigmas: list[float]
    weights: list[float]
    iterations: int
    batch: int


def reconstruct(
    kspace: KSpaceSlice,
    config: ReconConfig,
    prior: DiffusionImagePrior | None = None,
    progress: Progress | None = None,
) -> ReconResult:
    """Reconstruct one slice: prepare -> solve -> summarise (see the module docstring).

    Args:
        kspace: the slice (any Cartesian mask; prewhitened or with a noise covariance or neither).
        config: the settings (e.g. ``load_preset("fast")``).
        prior: an image prior; ``None`` loads the shipped default on the chosen device.
        progress: called as ``progress(done, total)`` after every iteration / Langevin step.

    Raises:
        TypeError: if ``prior`` does not implement :class:`DiffusionImagePrior`.
        ValueError: for data that cannot be reconstructed (e.g. all zero).
    """
    start = time.perf_counter()
    prepared = prepare_slice(kspace, config, prior)
    setup_time = time.perf_counter() - start
    solution = solve_prepared(prepared, config, progress)
    solve_time = time.perf_counter() - start - setup_time
    return summarise(prepared, solution, config, {"setup": setup_time, "solve": solve_time}, start)


def solve_prepared(prepared: PreparedSlice, config: ReconConfig, progress: Progress | None) -> Solution:
    """Stage 2 of one slice: the MAP estimate, or the posterior chains (from the MAP estimate by default),
    each followed by the damped data refinement where measured (docs/ALGORITHM.md 4.4-4.6)."""
    if config.method == "jackknife":
        return _solve_jackknife(prepared, config, progress)
    data_term, prior, coil_start = prepared.data_term, prepared.prior, prepared.coil_start
    extra_maps, sigma_n = coil_start.extra_maps, prepared.sigma_n
    batch = 1 if config.method == "map" else config.num_chains
    coils = coil_start.coils.unsqueeze(0).repeat(batch, 1, 1, 1)
    generator = torch.Generator(device=prepared.device).manual_seed(config.seed)

    def run_map(progress_map: Progress | None) -> tuple[Tensor, Tensor, list[float], list[float]]:
        result, map_sigmas, map_weights = _map_estimate(
            prepared, config, data_term, prepared.start_image.unsqueeze(0), coils[:1], progress_map
        )
        return result.image, result.coils, map_sigmas, map_weights

    if config.method == "map":
        map_image, final_coils, sigmas, weights = run_map(progress)
        map_image = _refined(prepared, config, data_term, map_image, final_coils)
        image = _combine_sets(map_image, extra_maps)[0]
        return Solution(image, None, final_coils, sigmas, weights, config.map_iterations, batch)
    sigmas = geometric_sigmas(*_chain_levels(config, sigma_n), config.num_noise_levels)
    weights = _data_weights(config, sigma_n, sigmas)
    sampler_progress = progress
    if config.method == "posterior_pc":
        moves = (config.num_noise_levels - 1) * (1 + config.corrector_steps)
    else:
        moves = config.num_noise_levels * config.steps_per_level
    if config.initialisation == "map":
        total = config.map_iterations + moves
        map_image, map_coils, _, _ = run_map(_offset_progress(progress, 0, total))
        sampler_progress = _offset_progress(progress, config.map_iterations, total)
        chain_start = map_image
        coils = map_coils.repeat(batch, 1, 1, 1)
    elif config.initialisation == "zero_filled":
        chain_start = prepared.start_image.unsqueeze(0)
    else:
        chain_start = torch.zeros_like(prepared.start_image)[None]
    noise = unit_noise(chain_start.expand(batch, -1, -1), generator)
    image = project_image(chain_start + sigmas[0] * noise)
    samples = _run_chains(
        config,
        data_term,
        prior,
        image,
        coils,
        sigmas,
        weights,
        generator,
        sampler_progress,
        coil_start.anchor,
    )
    # The magnitude is invariant to how each chain splits a smooth phase between image and
    # coils; mean and std are taken over the chains' magnitudes.
    chains = _refined(prepared, config, data_term, samples.samples, samples.coils)  # both samplers
    magnitudes = _combine_sets(chains, extra_maps)
    iterations = samples.steps + (config.map_iterations if config.initialisation == "map" else 0)
    return Solution(
        magnitudes.mean(dim=0),
        magnitudes.std(dim=0, unbiased=True),
        samples.coils,
        sigmas,
        weights,
        iterations,
        batch,
    )


def _map_estimate(
    prepared: PreparedSlice,
    config: ReconConfig,
    data_term: JointDataTerm,
    image: Tensor,
    coils: Tensor,
    progress: Progress | None,
) -> tuple[MapResult, list[float], list[float]]:
    """The MAP solver from ``image`` ``(B, ...)`` and ``coils`` ``(B, C, H, W)`` along the
    configured continuation; also returns its prior levels and data weights."""
    sigmas, weights = map_schedule(config, prepared.sigma_n)
    anchor = prepared.coil_start.anchor
    result = configured_map(
        config, prepared.prior, data_term, image, coils, sigmas, weights, anchor, progress
    )
    return result, sigmas, weights


def configured_map(
    config: ReconConfig,
    prior: DiffusionImagePrior,
    data_term: JointDataTerm,
    image: Tensor,
    coils: Tensor,
    sigmas: list[float] | Tensor,
    weights: list[float] | Tensor,
    coil_anchor: Tensor | None,
    progress: Progress | None,
) -> MapResult:
    """:func:`recon_core.recon.map_solver.solve_map` with the configuration's coil prior, along
    ``sigmas`` / ``weights`` (one schedule, or a ``(T, B)`` one per batch entry)."""
    return solve_map(
        data_term,
        prior,
        image,
        coils,
        sigmas,
        weights,
        config.coil_smoothness,
        progress,
        coil_order=COIL_PRIOR_ORDER,
        coil_anchor=coil_anchor,
    )


def refinement_damping(config: ReconConfig, sigma_n: float) -> float:
    """The damping ``(sigma_n / tau)^2`` of the data refinement (normalised units)."""
    return (sigma_n / config.data_consistency_amplitude) ** 2


def _refined(
    prepared: PreparedSlice, config: ReconConfig, data_term: JointDataTerm, images: Tensor, coils: Tensor
) -> Tensor:
    """The damped data refinement of ``images`` (:func:`refinement_damping`, coils fixed)."""
    damping = refinement_damping(config, prepared.sigma_n)
    return refine_data_consistency(data_term, images, coils, config.data_consistency_steps, damping)


def _solve_jackknife(prepared: PreparedSlice, config: ReconConfig, progress: Progress | None) -> Solution:
    """Stage 2 of ``method="jackknife"``: the MAP estimate of the full data and of ``num_chains``
    replicates with one group of lines left out each, in one batch; the std is the jackknife's
    (:mod:`recon_core.recon.jackknife`)."""
    data_term, coil_start = prepared.data_term, prepared.coil_start
    replicates = deletion_masks(data_term.mask, config.num_chains, config.seed)
    masks = torch.cat((data_term.mask.unsqueeze(0), replicates))
    batched = JointDataTerm(kspace=data_term.kspace, mask=masks, extra_maps=coil_start.extra_maps)
    zero_filled = FFT2Operator().adjoint(batched.kspace * masks.unsqueeze(1))
    images = start_image(zero_filled, coil_start.coils, config, coil_start.extra_maps)
    coils = coil_start.coils.unsqueeze(0).repeat(masks.shape[0], 1, 1, 1)
    result, sigmas, weights = _map_estimate(prepared, config, batched, images, coils, progress)
    refined = _refined(prepared, config, batched, result.image, result.coils)
    magnitudes = _combine_sets(refined, coil_start.extra_maps)
    std = jackknife_error(magnitudes[1:], magnitudes[0])
    return Solution(
        magnitudes[0], std, result.coils[:1], sigmas, weights, config.map_iterations, replicates.shape[0]
    )


def summarise(
    prepared: PreparedSlice,
    solution: Solution,
    config: ReconConfig,
    timings: dict[str, float],
    start: float,
) -> ReconResult:
    """Stage 3: undo the scale, average the chains' coils, and fill the diagnostics."""
    coil_start, scale = prepared.coil_start, prepared.scale
    coil_maps = normalised_coils(normalised_coils(solution.coils).mean(dim=0)).to(torch.complex64)
    extra_maps = coil_start.extra_maps
    info: dict[str, Any] = {
        "method": config.method,
        "device": str(prepared.device),
        "scale_factor": scale,
        "noise_std": prepared.noise_std,
        "noise_std_normalised": prepared.sigma_n,
        "noise_source": prepared.noise_source,
        "data_weight": solution.weights[-1],
        "sigmas": (solution.sigmas[0], solution.sigmas[-1]),
        "iterations": solution.iterations,
        "num_chains": solution.batch,
        "seed": config.seed,
        "image_model": config.image_model,
        "coil_start": coil_start.name,
        "map_sets": 1 if extra_maps is None else 1 + extra_maps.shape[0],
        "second_set_fraction": coil_start.second_set_fraction,
        "acceleration": prepared.data.acceleration,
        "coils": prepared.data.kspace.shape[0],
        "coil_compression_energy": prepared.coil_energy,
        "timings_s": {**timings, "total": time.perf_counter() - start},
    }
    std = solution.std
    return ReconResult(
        image=(solution.image * scale).to(torch.float32),
        std=None if std is None else (std * scale).to(torch.float32),
        coil_maps=coil_maps,
        info=info,
    )
