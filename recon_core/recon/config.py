"""Typed reconstruction configuration and the YAML presets that fill it.

``ReconConfig`` is a frozen dataclass; YAML presets (``config/presets/*.yaml``, installed as
the ``pogmdm_config`` package data) and Gadgetron XML properties are parsed only at the edges
and turned into it with :func:`load_preset` / :func:`config_from_mapping`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

Method = Literal["posterior", "posterior_pc", "map", "jackknife"]
Initialisation = Literal["zero_filled", "noise", "map"]
ImageModel = Literal["complex", "magnitude"]
CoilStart = Literal["auto", "espirit", "lowpass"]


@dataclass(frozen=True)
class ReconConfig:
    """Every knob of the joint image / coil reconstruction, with its default and why.

    Units: images live on the normalised scale of docs/ALGORITHM.md section 1 (the data divided by
    the maximum of the central zero-filled RSS image, so the object's maximum is about 1).
    The defaults below are the reference values and exactly the ``fast`` preset, the gadget's
    default (``method="map"``); the other presets (``config/presets/*.yaml``) list only what
    they change (method, chains, levels, steps, MAP iterations, coil update interval).

    **User settings** (what a preset or a gadget property changes), listed first: ``method``,
    ``device``, ``seed``, ``num_chains``, ``num_noise_levels``, ``steps_per_level``,
    ``map_iterations``; the gadget's ``preset`` and ``output_variance`` are gadget settings
    (``gadgets.settings.GadgetSettings``). **Everything after them is expert solver tuning**:
    defaults measured on the benchmarks (docs/benchmarks.md); change them with a benchmark.

    Attributes:
        method: ``"posterior"`` (annealed Langevin, ``num_chains`` chains: mean and std),
            ``"posterior_pc"`` (ScoreMRI-style predictor-corrector chains from ``sigma_max``
            down to the noise level, :mod:`recon_core.recon.pc_sampler`: mean and std),
            ``"map"`` (deterministic alternating proximal gradient; no std map) or
            ``"jackknife"`` (the MAP estimate and the delete-a-group jackknife's RMS error
            (variance plus squared bias) over ``num_chains`` replicates that each leave one
            group of the acquired lines out, :mod:`recon_core.recon.jackknife`; of the shipped maps
            the one that ranks the error best, docs/benchmarks.md; costs ``num_chains + 1`` MAP
            reconstructions).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        seed: random seed (same seed, same result on the same device).
        num_chains: B, parallel sampler chains (posterior only, >= 2 so that a std exists).
            8 chains give a std map whose relative error is about 1 / sqrt(2 (B - 1)) = 27 %.
            For ``jackknife``: the number of groups (replicates).
        num_noise_levels: L, geometric noise levels from ``sigma_max`` to ``sigma_min``.
        steps_per_level: T, Langevin steps per noise level.
        map_iterations: iterations of the MAP mode (one image and one coil step each; the image
            steps always use Nesterov extrapolation, +3.7 dB at 100 iterations on the Berkeley
            brain, 1D random R=4, see :func:`~recon_core.recon.map_solver.solve_map`).
        sigma_max: the largest diffusion noise level of the chains; 0 (the default) ties it to
            the MAP start: twice the final MAP level (:func:`final_map_sigma`). Measured on
            the Berkeley brain, 1D random R=4 (balanced): 33.9 dB tied against 33.4 dB with
            the former fixed 0.01 -> 0.005. From a zero-filled or noise start set it (and
            ``sigma_min``) explicitly: 0.4, the top of the prior's training range, and about
            200 steps (27.3 dB that way against 32.5 dB from the MAP start in the first
            measurement).
        sigma_min: the last noise level of the chains; 0 (the default): the final MAP level
            (``posterior_pc`` may set ``sigma_max`` alone and keep this tied to the noise;
            ``sigma_max`` is then raised to at least twice that level on noisy data).
        corrector_steps: ``posterior_pc``: Langevin corrector steps after every predictor step;
            the predictor steps are ``num_noise_levels - 1``.
        corrector_snr: ``posterior_pc``: the corrector's signal-to-noise ratio (step rule of
            Song et al.; ScoreMRI uses 0.16).
        step_size: Langevin step ``alpha_k = step_size / (1 / sigma_k^2 + lambda_k)``, a fraction
            of the inverse curvature of prior (about ``1 / sigma_k^2``) plus data term
            (``lambda_k``); stable below about 1.5 for any data weight. Without data it is the
            usual ``step_size * sigma_k^2`` (the spec's ``eps * sigma_k^2 / sigma_min^2``).
        map_sigma: prior noise level of the MAP regulariser at the end of the continuation;
            0 (the default) ties it to the data's noise: ``map_sigma_noise_factor * sigma_n``
            (see :func:`recon_core.recon.reconstruction.final_map_sigma`). A fixed 0.005 smoothed
            the high-SNR Berkeley brain (sigma_n 0.00064): the noise-tied 0.001 measured
            +1 dB on 1D random R=4 and +6 dB on equispaced R=4 + 24 ACS.
        map_sigma_noise_factor: the noise-tied final level in units of ``sigma_n`` (the std of
            one real k-space noise component on the normalised scale).
        map_sigma_start: first prior noise level of the MAP continuation; ``sigma`` falls
            geometrically to ``map_sigma`` over the first ``map_continuation`` of the iterations.
        map_continuation: the fraction of the MAP iterations over which ``sigma`` falls (then it
            stays at the final level). The slow fall finds the better minimum of the non-convex
            energy: ``fast`` (100 iterations) on the Berkeley brain, (a)-(f), 0.5 -> 0.7:
            35.27 / 21.88 / 62.60 / 41.98 / 73.13 / 37.05 -> 35.37 / 22.30 / 62.57 / 41.98 / 73.21 /
            36.96 dB; 0.8 lifts (b) to 22.47 but costs (c), (f) 0.1 dB, 1.0 costs (c) 0.6 dB,
            0.3 costs (a) 1.5 dB (docs/benchmarks.md).
        coil_smoothness: mu of the coil smoothness prior ``(mu/2) <c, L^p c>``, relative
            to the unweighted data fit (noise-independent): coil detail finer than about
            ``sqrt(mu) / u`` pixels is suppressed (``u`` the image intensity, about 1).
        coil_update_interval: the sampler updates the coils every this many Langevin steps
            (coils converge early; larger values save forward-model evaluations).
        coil_init_cutoff: the coil start is the zero-filled coil images low-passed by the
            smoothness prox with its half-power frequency at this fraction of the k-space
            half-width; needs no calibration region.
        data_weight_scale: multiplier on the automatic data weight ``1 / (sigma_n^2 + sigma^2)``.
            1 would be Bayes-consistent for an exact prior; 3 is measured: it gains 0.6-0.9 dB
            (MAP and posterior, Berkeley brain, and on the synthetic phantom with the test
            prior), i.e. the shipped prior is somewhat too strong (a temperature correction).
        scale_region: the image scale is the maximum of the zero-filled RSS over the central
            ``scale_region`` fraction of each image axis (1: the whole image, the default).
            The prior was trained on images with maximum 1; an object brighter at its edge than
            in the centre (a bright rim, head coils' high sensitivity near the scalp) reached
            2.4 on the demo with the central half (0.5), and the prior then shrank that rim by
            aliasing it into the weakly measured directions (FOV/3 ghosts). The whole image:
            demo NMSE 0.044 -> 0.028; Berkeley brain ``fast`` (a)-(f) +0.18, +0.13, +1.44,
            +0.04, -0.65, -0.03 dB (docs/benchmarks.md).
        final_denoise: denoise every chain once with Tweedie's formula at ``sigma_min``.
        clamp_every_step: project the sampler's image onto ``u >= 0`` after every Langevin step
            (the design card) or only the final samples.
        initialisation: sampler start: zero-filled coil combination, pure noise, or ``"map"``:
            the MAP estimate (image and coils, ``map_*`` settings) - all plus ``sigma_max``
            noise. From the MAP start the chains only need to explore the posterior around it,
            so a short schedule from a small ``sigma_max`` suffices (the posterior presets).
        image_model: ``"complex"``: the image is complex and carries the object phase, the
            prior acts on its real and imaginary parts (:mod:`recon_core.prior.complex_prior`), the
            coils carry only smooth phase; ``"magnitude"``: the design card's real non-negative
            image, all phase in the smooth coils (fails where the object phase is not smooth,
            e.g. at the scalp of a brain: MAP on the Berkeley brain: 4.9 dB lower on 1D random
            R=4, 8.7 dB on equispaced R=4).
        coil_start: ``"auto"``: ESPIRiT maps (:mod:`recon_core.physics.espirit`) where the data carry a
            fully sampled calibration block of at least ``espirit_kernel + 2`` samples a side,
            else the calibration-free low-pass start; ``"espirit"`` (error without a block) or
            ``"lowpass"`` force one. The coils are refined jointly either way.
        espirit_kernel: ESPIRiT k-space kernel width.
        map_sets: coil-map sets of the image model: 0 (auto: 2 where ESPIRiT's second
            eigenvalue shows an object wider than the field of view, see
            :mod:`recon_core.recon.map_sets`), 1, or 2 (soft SENSE; needs a calibration block).
        data_consistency_steps: the most conjugate-gradient steps of the damped data
            refinement of the MAP output and of every chain's final sample (both samplers;
            coils fixed; :mod:`recon_core.recon.data_consistency`); 0 switches it off. 300 lets
            CG reach the damped solution on the Berkeley brain ((c): 50 steps 54.9 dB, 300 steps
            55.6 dB at tau 0.03). On the ``posterior_pc`` chains it lifted the mean on (a)-(d)
            from 34.49 / 23.24 / 43.36 / 39.22 to 35.92 / 23.43 / 62.02 / 41.67 dB (the chains'
            unrelaxed start noise along weakly measured directions is removed).
        data_consistency_amplitude: ``tau``: the refinement follows the data along directions
            where a feature of this amplitude (normalised units) stands above the noise
            (damping ``(sigma_n / tau)^2``). Larger trusts the data more: with the coil prior
            centred on the ESPIRiT start, 0.03 / 0.06 / 0.1 gave (c) 55.6 / 61.2 / 63.9 dB and
            (a) 34.5 / 35.0 / 35.6 dB on the Berkeley brain, but 0.1 cost the
            piecewise-constant phantom under a matching TV prior 1.4x its NMSE (module docstring).
        virtual_coils: compress the (prewhitened) data to this many SVD virtual coils before
            anything else (:mod:`recon_core.physics.coil_compression`); 0 keeps every coil. The
            data-term work scales with the coil count; what it costs in quality is measured
            in docs/benchmarks.md. The result's ``coil_maps`` are then the virtual coils' maps.
        prior_fft_padding: evaluate the prior on the image zero-padded to the next size with
            prime factors 2, 3, 5 (:mod:`recon_core.prior.padded`; zero instead of periodic
            boundaries for its filters): a 230-pixel side costs about twice the transforms of a
            240-pixel one. Measured in docs/benchmarks.md.
    """

    # User settings.
    method: Method = "map"
    device: str = "auto"
    seed: int = 0
    num_chains: int = 8
    num_noise_levels: int = 10
    steps_per_level: int = 4
    map_iterations: int = 100
    # Expert solver tuning.
    sigma_max: float = 0.0
    sigma_min: float = 0.0
    corrector_steps: int = 1
    corrector_snr: float = 0.16
    step_size: float = 1.0
    map_sigma: float = 0.0
    map_sigma_noise_factor: float = 1.5
    map_sigma_start: float = 0.1
    map_continuation: float = 0.7
    coil_smoothness: float = 10.0
    coil_update_interval: int = 1
    coil_init_cutoff: float = 0.1
    data_weight_scale: float = 3.0
    scale_region: float = 1.0
    final_denoise: bool = True
    clamp_every_step: bool = True
    initialisation: Initialisation = "map"
    image_model: ImageModel = "complex"
    coil_start: CoilStart = "auto"
    espirit_kernel: int = 6
    map_sets: int = 0
    data_consistency_steps: int = 300
    data_consistency_amplitude: float = 0.06
    virtual_coils: int = 0
    prior_fft_padding: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("posterior", "posterior_pc", "map", "jackknife"):
            raise ValueError(
                f"method must be 'posterior', 'posterior_pc', 'map' or 'jackknife', got {self.method!r}"
            )
        if self.corrector_steps < 0 or not self.corrector_snr > 0.0:
            raise ValueError(
                f"corrector_steps must be >= 0 and corrector_snr > 0, "
                f"got {self.corrector_steps!r}, {self.corrector_snr!r}"
            )
        if self.image_model not in ("complex", "magnitude"):
            raise ValueError(f"image_model must be 'complex' or 'magnitude', got {self.image_model!r}")
        if self.initialisation not in ("zero_filled", "noise", "map"):
            raise ValueError(
                f"initialisation must be 'zero_filled', 'noise' or 'map', got {self.initialisation!r}"
            )
        for name in (
            "num_chains",
            "num_noise_levels",
            "steps_per_level",
            "map_iterations",
            "coil_update_interval",
        ):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in (
            "step_size",
            "data_weight_scale",
            "map_sigma_start",
            "map_sigma_noise_factor",
        ):
            if not float(getattr(self, name)) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if int(self.virtual_coils) < 0:
            raise ValueError(f"virtual_coils must be >= 0 (0: no compression), got {self.virtual_coils!r}")
        if not self.map_sigma >= 0.0:
            raise ValueError(f"map_sigma must be >= 0 (0: tied to the noise), got {self.map_sigma!r}")
        if not self.coil_smoothness >= 0.0:
            raise ValueError(f"coil_smoothness must be >= 0, got {self.coil_smoothness!r}")
        if not self.data_consistency_amplitude > 0.0:
            raise ValueError(
                f"data_consistency_amplitude must be > 0, got {self.data_consistency_amplitude!r}"
            )
        if int(self.data_consistency_steps) < 0:
            raise ValueError(f"data_consistency_steps must be >= 0, got {self.data_consistency_steps!r}")
        if self.map_sets not in (0, 1, 2):
            raise ValueError(f"map_sets must be 0 (auto), 1 or 2, got {self.map_sets!r}")
        if not (self.sigma_max >= 0.0 and self.sigma_min >= 0.0):
            raise ValueError(
                f"sigma_max and sigma_min must be >= 0, got {self.sigma_max!r}, {self.sigma_min!r}"
            )
        if (self.sigma_max == 0.0) != (self.sigma_min == 0.0) and not (
            self.method == "posterior_pc" and self.sigma_max > 0.0
        ):
            raise ValueError(
                "sigma_max and sigma_min must both be set (> 0) or both be 0 (tied to the MAP level)"
            )
        if self.sigma_min > 0.0 and self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")
        if self.sigma_max == 0.0 and self.initialisation != "map":
            raise ValueError(
                f"initialisation {self.initialisation!r} needs explicit sigma_max and sigma_min "
                "(0 ties them to the MAP level, which only the 'map' start has)"
            )
        if self.map_sigma > self.map_sigma_start:
            raise ValueError(
                f"map_sigma ({self.map_sigma}) must not exceed map_sigma_start ({self.map_sigma_start})"
            )
        if self.method == "posterior_pc" and self.num_noise_levels < 2:
            raise ValueError(f"posterior_pc needs num_noise_levels >= 2, got {self.num_noise_levels}")
        if self.method != "map" and self.num_chains < 2:
            raise ValueError(
                f"method {self.method!r} needs num_chains >= 2 for a std map, got {self.num_chains}"
            )
        if not 0.0 < self.map_continuation <= 1.0:
            raise ValueError(f"map_continuation must be in (0, 1], got {self.map_continuation!r}")
        if not 0.0 < self.coil_init_cutoff <= 1.0:
            raise ValueError(f"coil_init_cutoff must be in (0, 1], got {self.coil_init_cutoff!r}")
        if not 0.0 < self.scale_region <= 1.0:
            raise ValueError(f"scale_region must be in (0, 1], got {self.scale_region!r}")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(ReconConfig)}


def config_from_mapping(values: dict[str, Any], base: ReconConfig | None = None) -> ReconConfig:
    """Build a config from ``base`` (default: the defaults) overridden by ``values``.

    Strings are converted to each field's type, so XML property values can be passed as-is.

    Raises:
        ValueError: naming an unknown key or a value that does not convert.
    """
    fields = _field_types()
    base = ReconConfig() if base is None else base
    updates: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise ValueError(f"unknown reconstruction setting {key!r}; known: {', '.join(sorted(fields))}")
        default = getattr(base, key)
        try:
            if isinstance(default, bool):
                updates[key] = parse_bool(raw)
            elif isinstance(default, int):
                updates[key] = int(raw)
            elif isinstance(default, float):
                updates[key] = float(raw)
            else:
                updates[key] = str(raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad value {raw!r} for {key!r}: {error}") from None
    return dataclasses.replace(base, **updates)


def parse_bool(raw: Any) -> bool:
    """A bool, or ``true/false``, ``1/0``, ``yes/no``, ``on/off`` (any case, spaces ignored): the one
    boolean reader of presets and gadget properties."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def available_presets() -> list[str]:
    """Names of the shipped presets (``config/presets/NAME.yaml``)."""
    folder = resources.files("pogmdm_config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> ReconConfig:
    """The shipped preset ``name`` as a :class:`ReconConfig`.

    Raises:
        ValueError: for an unknown preset name or a malformed preset file.
    """
    names = available_presets()
    if name not in names:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(names)}")
    text = (resources.files("pogmdm_config") / "presets" / f"{name}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"preset {name!r} must be a mapping of settings")
    return config_from_mapping(values)
