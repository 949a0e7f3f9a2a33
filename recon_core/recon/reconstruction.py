"""The public entry point: joint image and coil reconstruction of one 2D slice.

    result = reconstruct(kspace_slice, load_preset("balanced"), prior=None, progress=callback)
    result.image      # (H, W) float32 magnitude, in the units of the input data
    result.std        # (H, W) float32 posterior std (posterior method), None for MAP
    result.coil_maps  # (C, H, W) complex64 RSS-normalised sensitivities
    result.info       # method, timings, noise level, data weight, scale factor, ...

The recipe (docs/ALGORITHM.md sections 1 and 4), with nothing tuned per data set:

1. Prewhiten with the noise covariance where one is known (then ``sigma_n`` is exact);
   otherwise estimate ``sigma_n`` from the outer acquired k-space
   (:mod:`recon_core.physics.noise_estimation`).
2. Scale: divide the data by the maximum of the zero-filled RSS image (over the central
   ``scale_region`` fraction of each axis; default the whole image);
   undone on output.
3. Start: coils = zero-filled coil images low-passed by the exact smoothness prox (no
   calibration region needed); image = zero-filled combination with those coils (or noise).
4. MAP (:mod:`recon_core.recon.map_solver`), annealed Langevin (:mod:`recon_core.recon.sampler`) or
   predictor-corrector chains (:mod:`recon_core.recon.pc_sampler`, ``posterior_pc``) with the data
   weight ``lambda = data_weight_scale / (sigma_n^2 + sigma^2)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm, coil_rss, normalise_coil_scale, normalised_coils
from recon_core.physics.espirit import CalibrationRegion, calibration_region, espirit_maps
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.noise_estimation import PREWHITENED_NOISE_STD, estimate_noise_std
from recon_core.physics.operators import FFT2Operator
from recon_core.physics.prewhitening import prewhiten_slice
from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.coil_prior import smoothness_prox
from recon_core.prior.complex_prior import ComplexPartsPrior
from recon_core.recon.config import ReconConfig
from recon_core.recon.data_consistency import refine_data_consistency
from recon_core.recon.device import resolve_device
from recon_core.recon.joint_steps import project_image
from recon_core.recon.map_sets import MapSetPrior, needs_second_set, second_set_fraction, second_set_maps
from recon_core.recon.map_solver import solve_map
from recon_core.recon.pc_sampler import sample_posterior_pc
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
        std: ``(H, W)`` float32 pixel-wise posterior standard deviation (same units), or
            ``None`` for the MAP method.
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


def _central_region(image: Tensor, fraction: float) -> Tensor:
    height, width = image.shape[-2:]
    rows = max(1, round(fraction * height))
    cols = max(1, round(fraction * width))
    top, left = (height - rows) // 2, (width - cols) // 2
    return image[..., top : top + rows, left : left + cols]


def scale_factor(zero_filled_coil_images: Tensor, region: float) -> float:
    """Maximum of the RSS of ``(C, H, W)`` zero-filled coil images over the central ``region``
    fraction of each axis (1: the whole image).

    Raises:
        ValueError: if the data are all zero there (nothing to normalise by).
    """
    rss = coil_rss(zero_filled_coil_images, eps=0.0)
    value = float(_central_region(rss, region).max())
    if not value > 0.0 or not math.isfinite(value):
        raise ValueError(f"cannot scale the data: zero-filled RSS maximum is {value}")
    return value


def initial_coils(zero_filled_coil_images: Tensor, cutoff: float, order: int = 1) -> Tensor:
    """Low-passed zero-filled coil images, RMS of the RSS scaled to 1: ``(C, H, W)``.

    The smoothness prox ``1 / (1 + t w^p)`` with ``t = (pi cutoff / 2)^(-2p)`` halves the
    frequency ``cutoff`` (fraction of the k-space half-width).
    """
    weight = (1.0 / (math.pi * cutoff / 2.0) ** 2) ** order
    return normalise_coil_scale(smoothness_prox(zero_filled_coil_images, weight, order))


@dataclass(frozen=True)
class CoilStart:
    """The coil start: ``coils`` ``(C, H, W)`` (jointly refined), ``extra_maps``
    ``(S - 1, C, H, W)`` fixed further map sets or ``None``, and ``name`` for the info.

    ``anchor`` is what the coil smoothness prior is centred on: the ESPIRiT start itself (the
    joint refinement then penalises rough *deviations* from the calibration's maps), or
    ``None`` (centred on zero: smooth maps) for the calibration-free start. Measured on the
    Berkeley brain (``fast`` MAP, with the data refinement then shipped): centred on zero the
    refinement eroded the ESPIRiT maps' detail and took the image with it, e.g. equispaced
    R=3 + 16 ACS 53.7 dB against 73.6 dB anchored (docs/benchmarks.md).
    """

    coils: Tensor
    extra_maps: Tensor | None
    name: str
    second_set_fraction: float | None = None
    anchor: Tensor | None = None


def start_coils(zero_filled: Tensor, data: KSpaceSlice, config: ReconConfig, noise_std: float) -> CoilStart:
    """ESPIRiT where a calibration block exists (``coil_start`` ``auto`` or ``espirit``), else
    the low-passed zero-filled coil images; a second, fixed map set where ``map_sets`` is 2, or
    is 0 (auto) and ESPIRiT's eigenvalues show an object wider than the field of view."""
    region = calibration_region(data.mask) if config.coil_start != "lowpass" else None
    if region is not None and min(region.shape) >= config.espirit_kernel + 2:
        kspace = data.kspace.to(torch.complex64)
        espirit = espirit_maps(kspace, region, 2, config.espirit_kernel, noise_std=noise_std)
        phase = _low_resolution_phase(espirit.maps[0], kspace, region, config)
        coils = normalise_coil_scale(espirit.maps[0] * phase)
        fraction = second_set_fraction(espirit.eigenvalues)
        two = config.map_sets == 2 or (config.map_sets == 0 and needs_second_set(espirit.eigenvalues))
        extra = second_set_maps(espirit.maps * phase, espirit.eigenvalues) if two else None
        return CoilStart(coils, extra, "espirit", fraction, anchor=coils)
    if config.coil_start == "espirit" or config.map_sets == 2:
        raise ValueError(
            f"coil_start {config.coil_start!r} with map_sets {config.map_sets} needs a fully sampled "
            f"calibration block of at least {config.espirit_kernel + 2} samples a side at the k-space centre"
        )
    coils = initial_coils(zero_filled, config.coil_init_cutoff, config.coil_smoothness_order)
    return CoilStart(coils, None, "lowpass")


def _low_resolution_phase(
    maps: Tensor, kspace: Tensor, region: CalibrationRegion, config: ReconConfig
) -> Tensor:
    """``(H, W)`` unit phase of the low-resolution image seen through ``maps`` ``(C, H, W)``.

    The calibration block alone, low-passed as the calibration-free start is, combined with
    the maps. Multiplying the maps by it moves the smooth object phase into the coils, as the
    calibration-free start does: the complex image then stays nearly real, which the prior
    (trained on magnitude images) favours. Measured on the Berkeley brain, 1D random R=4:
    30.5 dB without it, 33.5 dB with it (MAP, final level 0.001).
    """
    block = torch.zeros_like(kspace)
    rows, cols = slice(region.ky_start, region.ky_stop), slice(region.kx_start, region.kx_stop)
    block[:, rows, cols] = kspace[:, rows, cols]
    low = initial_coils(FFT2Operator().adjoint(block), config.coil_init_cutoff, config.coil_smoothness_order)
    combined = (maps.conj() * low).sum(dim=-3)
    return combined / combined.abs().clamp_min(1e-12)


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


def _load_prior(device: torch.device) -> DiffusionImagePrior:
    """The shipped PoGMDM in its fast inference view (tabulated ``psi'``)."""
    from recon_core.prior import load_inference_prior

    return load_inference_prior("", device)


def _noise_level(data: KSpaceSlice) -> tuple[float, str]:
    if data.prewhitened:
        return PREWHITENED_NOISE_STD, "prescan"
    return estimate_noise_std(data.kspace, data.mask), "estimated"


def _data_weights(config: ReconConfig, sigma_n: float, sigmas: list[float]) -> list[float]:
    """The data weight ``lambda = data_weight_scale / (sigma_n^2 + sigma^2)`` at each prior level."""
    return [config.data_weight_scale / (sigma_n**2 + sigma**2) for sigma in sigmas]


def _map_schedule(config: ReconConfig, sigma_n: float) -> tuple[list[float], list[float]]:
    """MAP prior noise levels (geometric from ``map_sigma_start`` to ``map_sigma`` over the
    first half of the iterations, then constant) and the data weight of each iteration."""
    half = max(1, config.map_iterations // 2)
    final = final_map_sigma(config, sigma_n)
    sigmas = geometric_sigmas(config.map_sigma_start, final, half) if half > 1 else []
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
    if config.method == "posterior_pc":
        return sample_posterior_pc(
            data_term,
            prior,
            image,
            coils,
            sigmas,
            weights,
            config.corrector_steps,
            config.corrector_snr,
            config.coil_smoothness,
            generator,
            coil_update_interval=config.coil_update_interval,
            final_denoise=config.final_denoise,
            progress=progress,
            coil_order=config.coil_smoothness_order,
            coil_anchor=coil_anchor,
        )
    return sample_posterior(
        data_term,
        prior,
        image,
        coils,
        sigmas,
        weights,
        config.steps_per_level,
        config.step_size,
        config.coil_smoothness,
        generator,
        coil_update_interval=config.coil_update_interval,
        final_denoise=config.final_denoise,
        clamp_every_step=config.clamp_every_step,
        progress=progress,
        coil_order=config.coil_smoothness_order,
        coil_anchor=coil_anchor,
    )


def reconstruct(
    kspace: KSpaceSlice,
    config: ReconConfig,
    prior: DiffusionImagePrior | None = None,
    progress: Progress | None = None,
) -> ReconResult:
    """Reconstruct one slice; see the module docstring for the recipe.

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
    if not isinstance(kspace, KSpaceSlice):
        raise TypeError(f"kspace must be a KSpaceSlice, got {type(kspace).__name__}")
    device = resolve_device(config.device)
    if prior is None:
        prior = _load_prior(device)
    elif not isinstance(prior, DiffusionImagePrior):
        raise TypeError(
            f"prior must implement energy(x, sigma) and score(x, sigma), got {type(prior).__name__}"
        )

    data = prewhiten_slice(kspace.to(device))
    noise_std, noise_source = _noise_level(data)
    kspace_data = data.kspace.to(torch.complex64)
    zero_filled = FFT2Operator().adjoint(kspace_data)
    scale = scale_factor(zero_filled, config.scale_region)
    sigma_n = noise_std / scale
    coil_start = start_coils(zero_filled / scale, data, config, noise_std)
    coils, extra_maps = coil_start.coils, coil_start.extra_maps
    data_term = JointDataTerm(kspace=kspace_data / scale, mask=data.mask, extra_maps=extra_maps)
    combined = (normalised_coils(coils).conj() * zero_filled / scale).sum(dim=0).to(torch.complex64)
    if config.image_model == "complex":
        prior = ComplexPartsPrior(prior)
    else:
        combined = combined.abs()
    if extra_maps is not None:
        # One image per map set: (S, H, W); the further sets start at zero.
        combined = torch.cat((combined[None], torch.zeros_like(combined).expand(extra_maps.shape[0], -1, -1)))
        prior = MapSetPrior(prior)
    batch = 1 if config.method == "map" else config.num_chains
    coils = coils.unsqueeze(0).repeat(batch, 1, 1, 1)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    setup_time = time.perf_counter() - start

    damping = (sigma_n / config.data_consistency_amplitude) ** 2

    def run_map(progress_map: Progress | None) -> tuple[Tensor, Tensor, list[float], list[float]]:
        map_sigmas, map_weights = _map_schedule(config, sigma_n)
        result = solve_map(
            data_term,
            prior,
            combined.unsqueeze(0),
            coils[:1],
            map_sigmas,
            map_weights,
            config.coil_smoothness,
            progress_map,
            coil_order=config.coil_smoothness_order,
            coil_anchor=coil_start.anchor,
        )
        return result.image, result.coils, map_sigmas, map_weights

    if config.method == "map":
        map_image, final_coils, sigmas, weights = run_map(progress)
        map_image = refine_data_consistency(
            data_term, map_image, final_coils, config.data_consistency_steps, damping
        )
        image_normalised, std_normalised = _combine_sets(map_image, extra_maps)[0], None
        iterations = config.map_iterations
    else:
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
            start_image = map_image
            coils = map_coils.repeat(batch, 1, 1, 1)
        elif config.initialisation == "zero_filled":
            start_image = combined.unsqueeze(0)
        else:
            start_image = torch.zeros_like(combined)[None]
        noise = unit_noise(start_image.expand(batch, -1, -1), generator)
        image = project_image(start_image + sigmas[0] * noise)
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
        chains = samples.samples
        if config.method == "posterior":  # measured for the Langevin chains only (config docs)
            steps = config.data_consistency_steps
            chains = refine_data_consistency(data_term, chains, samples.coils, steps, damping)
        magnitudes = _combine_sets(chains, extra_maps)
        image_normalised = magnitudes.mean(dim=0)
        std_normalised = magnitudes.std(dim=0, unbiased=True)
        final_coils, iterations = samples.coils, samples.steps
        if config.initialisation == "map":
            iterations += config.map_iterations

    coil_maps = normalised_coils(normalised_coils(final_coils).mean(dim=0)).to(torch.complex64)
    solve_time = time.perf_counter() - start - setup_time
    info: dict[str, Any] = {
        "method": config.method,
        "device": str(device),
        "scale_factor": scale,
        "noise_std": noise_std,
        "noise_std_normalised": sigma_n,
        "noise_source": noise_source,
        "data_weight": weights[-1],
        "sigmas": (sigmas[0], sigmas[-1]),
        "iterations": iterations,
        "num_chains": batch,
        "seed": config.seed,
        "image_model": config.image_model,
        "coil_start": coil_start.name,
        "map_sets": 1 if extra_maps is None else 1 + extra_maps.shape[0],
        "second_set_fraction": coil_start.second_set_fraction,
        "acceleration": data.acceleration,
        "timings_s": {"setup": setup_time, "solve": solve_time, "total": time.perf_counter() - start},
    }
    return ReconResult(
        image=(image_normalised * scale).to(torch.float32),
        std=None if std_normalised is None else (std_normalised * scale).to(torch.float32),
        coil_maps=coil_maps,
        info=info,
    )
