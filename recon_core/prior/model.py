"""The Product-of-Gaussian-Mixture Diffusion Model (PoGMDM) image prior.

Energy of images ``x`` ``(B, H, W)`` at diffusion noise level ``sigma`` (image units)::

    E(x, sigma) = sum_j sum_p psi_j( lambda_j (K_j x)_p ; s_j(sigma) ),
    s_j(sigma)^2 = sigma_0^2 + (lambda_j eta_j sigma)^2

``K_j`` a real filter of the bank (periodic boundaries), ``eta_j`` its gain (so
``lambda_j eta_j`` is the gain of the effective filter ``lambda_j K_j`` whose response the
expert sees), ``psi_j`` the negative log of a Gaussian mixture (:mod:`mixture`).

The gain is either tied to the filter (``gain="max"``: ``eta_j = max |K_j^|``, the bank's
:meth:`~recon_core.prior.filter_bank.FilterBank.gains`) or a learned positive parameter per
expert (``gain="learned"``: ``eta_j = exp(log_gains_j)``, initialised at the ``max`` gain of
the initial filters). The formula for ``s_j`` is the same; a learned ``eta_j`` lets the product
of overlapping experts learn how much of the noise each expert absorbs (the true response noise
std is the l2 norm of ``K_j``, but the shearlets overlap in frequency, so neither that nor the
maximum is right for the product). The score is
analytic, ``grad_x log p = -sum_j lambda_j K_j^T psi_j'(lambda_j K_j x)``, evaluated in chunks
of filters and of responses, so an ``8 x 320 x 320`` batch needs a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, TypeVar

import torch
from torch import Tensor, nn

from recon_core.prior.base import tweedie_denoise
from recon_core.prior.conv_bank import ConvFilterBank
from recon_core.prior.filter_bank import FilterBank
from recon_core.prior.mixture import (
    DEFAULT_CHUNK_ELEMENTS,
    GaussianMixtureExperts,
    mixture_derivative,
    mixture_potential,
)
from recon_core.prior.shearlet import ShearletFilterBank
from recon_core.prior.tabulated import PotentialTables, build_tables, interpolate, stack_tables

BankKind = Literal["shearlet", "conv"]
GainKind = Literal["max", "learned"]

# psi'(responses (B, F, H, W), experts slice, std (B, F)) -> (B, F, H, W)
DerivativeFn = Callable[[Tensor, slice, Tensor], Tensor]


@dataclass(frozen=True)
class PoGMDMConfig:
    """Architecture of a PoGMDM prior (everything needed to rebuild it before loading weights).

    Attributes:
        bank: ``"shearlet"`` (20 learned shearlets) or ``"conv"`` (orthogonal conv filters).
        num_components: ``K``, mixture components per expert (odd).
        radius: ``a`` of the means grid; ``None`` takes the bank's default (0.5 / 1.0).
        num_scales, shear_levels, lowpass_taps, fan_size: the shearlet system.
        conv_filters, conv_size: the conv bank.
        filters_per_chunk: filters processed together in score / energy (memory vs speed).
        chunk_elements: bound on the ``(responses x K)`` temporaries of the exact mixture.
        conv_gain: conv bank only: ``eta_j`` from the l2 norm or the largest frequency
            magnitude of the filter, or ``"patch"`` (l2 gains, energy averaged over the ``n^2``
            overlapping patches; see :mod:`~recon_core.prior.conv_bank`).
        tight_frame: shearlet bank only: Parseval-normalise the filters (see
            :class:`~recon_core.prior.shearlet.ShearletFilterBank`).
        component_width: ``sigma_0`` in grid spacings (1: the spec's ``sigma_0`` = spacing).
        gain: ``"max"`` (``eta_j`` = the filter's largest frequency magnitude) or ``"learned"``
            (``eta_j`` a learned positive parameter per expert).
        lowpass_expert: shearlet bank only: also put an expert on the coarse low-pass band.

    The defaults of ``gain`` and ``lowpass_expert`` are the original architecture, so weights
    saved before these options existed (their config has neither key) load unchanged.
    """

    bank: BankKind = "shearlet"
    num_components: int = 125
    radius: float | None = None
    num_scales: int = 2
    shear_levels: tuple[int, ...] = (1, 1)
    lowpass_taps: int = 9
    fan_size: int = 17
    conv_filters: int = 48
    conv_size: int = 7
    filters_per_chunk: int = 4
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS
    gain: GainKind = "max"
    lowpass_expert: bool = False
    component_width: float = 1.0
    tight_frame: bool = False
    conv_gain: Literal["l2", "max", "patch"] = "l2"

    def __post_init__(self) -> None:
        if self.bank not in ("shearlet", "conv"):
            raise ValueError(f"bank must be 'shearlet' or 'conv', got {self.bank!r}")
        if self.gain not in ("max", "learned"):
            raise ValueError(f"gain must be 'max' or 'learned', got {self.gain!r}")
        if self.lowpass_expert and self.bank != "shearlet":
            raise ValueError("lowpass_expert needs the shearlet bank")
        if self.filters_per_chunk < 1 or self.chunk_elements < 1:
            raise ValueError("filters_per_chunk and chunk_elements must be >= 1")
        object.__setattr__(self, "shear_levels", tuple(int(level) for level in self.shear_levels))

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "shear_levels": list(self.shear_levels)}

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> PoGMDMConfig:
        known = {key: value for key, value in values.items() if key in cls.__dataclass_fields__}
        if "shear_levels" in known:
            known["shear_levels"] = tuple(known["shear_levels"])  # type: ignore[arg-type]
        return cls(**known)  # type: ignore[arg-type]


def build_filter_bank(config: PoGMDMConfig) -> FilterBank:
    """The filter bank that ``config`` names."""
    if config.bank == "shearlet":
        return ShearletFilterBank(
            config.num_scales,
            config.shear_levels,
            config.lowpass_taps,
            config.fan_size,
            lowpass_expert=config.lowpass_expert,
            tight=config.tight_frame,
        )
    return ConvFilterBank(config.conv_filters, config.conv_size, config.conv_gain)


def sigma_vector(sigma: Tensor | float, batch: int, reference: Tensor) -> Tensor:
    """``sigma`` as a ``(B,)`` tensor on ``reference``'s device and dtype."""
    values = torch.as_tensor(sigma, device=reference.device, dtype=reference.dtype)
    if values.ndim == 0:
        return values.expand(batch)
    if values.shape != (batch,):
        raise ValueError(f"sigma must be a float or a ({batch},) tensor, got shape {tuple(values.shape)}")
    return values


Cached = TypeVar("Cached")


def cached_value(
    cache: dict[tuple[object, ...], Cached], key: tuple[object, ...], build: Callable[[], Cached], limit: int
) -> Cached:
    """``cache[key]``, built without autograd on a miss; the cache is emptied when it holds ``limit``.

    One lookup (no ``in`` then ``[]``): slices reconstructed side by side share a cache, and
    another thread may clear it between two lookups.
    """
    value = cache.get(key)
    if value is None:
        if len(cache) >= limit:
            cache.clear()
        with torch.no_grad():
            value = build()
        cache[key] = value
    return value


def parameter_versions(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """Storage and version of every parameter: part of a cache key, so that an optimiser step
    or a load invalidates what was cached from the old values."""
    return tuple((param.data_ptr(), param._version) for param in module.parameters())


class PoGMDM(nn.Module):
    """PoGMDM prior: ``energy``, exact analytic ``score``, Tweedie ``denoise``; satisfies
    :class:`~recon_core.prior.base.DiffusionImagePrior`. See the module docstring for the maths.

    Images ``x`` are ``(B, H, W)`` real (float32 on the hot path; float64 works too) on the
    normalised scale (max about 1), any ``H, W``; ``sigma`` a float or a ``(B,)`` tensor.
    Transfer functions are built per image size on demand and cached (keyed by size, device,
    dtype and the parameters' versions, so an optimiser step or a load invalidates them);
    nothing is cached while autograd records the parameters.
    """

    max_cached = 17  # transfer functions (image sizes x devices x dtypes) and gains

    def __init__(self, config: PoGMDMConfig | None = None) -> None:
        super().__init__()
        self.config = config or PoGMDMConfig()
        self.bank = build_filter_bank(self.config)
        radius = self.config.radius if self.config.radius is not None else self.bank.expert_radius
        self.experts = GaussianMixtureExperts(
            self.bank.num_filters, self.config.num_components, radius, self.config.component_width
        )
        self.log_gains: nn.Parameter | None = None
        if self.config.gain == "learned":
            with torch.no_grad():
                initial = self.bank.max_gain().clamp(min=1e-6).log()
            self.log_gains = nn.Parameter(initial)
        self._cache: dict[tuple[object, ...], Tensor] = {}

    # ----------------------------------------------------------------- structure
    @property
    def num_filters(self) -> int:
        return self.bank.num_filters

    def num_parameters(self) -> int:
        """Learned scalars: ``J (K + 1) / 2`` weights + ``J`` scales (+ ``J`` gains if learned)
        + the bank's parameters."""
        return sum(param.numel() for param in self.parameters())

    @torch.no_grad()
    def project_(self) -> None:
        """Re-impose every constraint (call after each optimiser step)."""
        self.bank.project_()
        self.experts.project_()
        self._cache.clear()

    def _recording(self) -> bool:
        return torch.is_grad_enabled() and any(param.requires_grad for param in self.bank.parameters())

    def _cache_key(self, *parts: object) -> tuple[object, ...]:
        return (*parts, parameter_versions(self.bank))

    def transfer(self, height: int, width: int, dtype: torch.dtype) -> Tensor:
        """``(J, H, W // 2 + 1)`` complex transfer functions for ``H x W`` images (cached)."""
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        if self._recording():
            return self.bank.half_transfer(height, width).to(complex_dtype)
        key = self._cache_key("transfer", height, width, self.experts.means.device, complex_dtype)

        def build() -> Tensor:
            return self.bank.half_transfer(height, width).to(complex_dtype)

        return cached_value(self._cache, key, build, self.max_cached)

    def gains(self) -> Tensor:
        """``(J,)`` gains ``eta_j``: learned, or the filters' (cached like :meth:`transfer`)."""
        if self.log_gains is not None:
            return self.log_gains.exp()
        if self._recording():
            return self.bank.gains()
        return cached_value(self._cache, self._cache_key("gains"), self.bank.gains, self.max_cached)

    def component_std(self, sigma: Tensor) -> Tensor:
        """``(B, J)`` ``s_j(sigma_b)`` for ``sigma`` ``(B,)``."""
        return self.experts.component_std(self.gains().to(sigma.dtype), sigma)

    # ------------------------------------------------------------------ filtering
    def _filter(self, spectrum: Tensor, transfer: Tensor, experts: slice, shape: tuple[int, int]) -> Tensor:
        """``(B, F, H, W)`` responses ``lambda_j K_j x`` of the filters in ``experts``."""
        scales = self.experts.scales[experts].to(spectrum.real.dtype)
        filtered = torch.fft.irfft2(spectrum.unsqueeze(1) * transfer[experts], s=shape)
        return filtered * scales[:, None, None]

    def _adjoint(self, values: Tensor, transfer: Tensor, experts: slice) -> Tensor:
        """``(B, H, W // 2 + 1)`` spectrum of ``sum_j lambda_j K_j^T values_j``."""
        scales = self.experts.scales[experts].to(values.dtype)
        spectrum = torch.fft.rfft2(values * scales[:, None, None])
        return (spectrum * transfer[experts].conj()).sum(dim=1)

    def responses(self, x: Tensor) -> Tensor:
        """``(B, J, H, W)`` expert inputs ``lambda_j K_j x`` for ``x`` ``(B, H, W)``."""
        transfer = self.transfer(x.shape[-2], x.shape[-1], x.dtype)
        return self._filter(torch.fft.rfft2(x), transfer, slice(None), (x.shape[-2], x.shape[-1]))

    def _chunks(self) -> list[slice]:
        step = self.config.filters_per_chunk
        return [
            slice(start, min(start + step, self.num_filters)) for start in range(0, self.num_filters, step)
        ]

    def _mixture_rows(self, responses: Tensor, experts: slice, std: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        batch, count = responses.shape[:2]
        log_weights = self.experts.log_weights()[experts].to(responses.dtype)
        rows = log_weights.unsqueeze(0).expand(batch, -1, -1).reshape(batch * count, -1)
        return responses.reshape(batch * count, -1), rows, std.reshape(batch * count, 1)

    def _exact_derivative(self, responses: Tensor, experts: slice, std: Tensor) -> Tensor:
        points, log_weights, row_std = self._mixture_rows(responses, experts, std)
        means = self.experts.means.to(responses.dtype)
        values = mixture_derivative(points, log_weights, row_std, means, self.config.chunk_elements)
        return values.reshape(responses.shape)

    # ---------------------------------------------------------------- the prior
    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``-log p(x, sigma)`` per image, ``(B,)`` (each expert's mixture normalised in 1D)."""
        sigma_b = sigma_vector(sigma, x.shape[0], x)
        std = self.component_std(sigma_b)
        transfer = self.transfer(x.shape[-2], x.shape[-1], x.dtype)
        spectrum = torch.fft.rfft2(x)
        total = x.new_zeros(x.shape[0])
        for experts in self._chunks():
            responses = self._filter(spectrum, transfer, experts, (x.shape[-2], x.shape[-1]))
            points, log_weights, row_std = self._mixture_rows(responses, experts, std[:, experts])
            means = self.experts.means.to(x.dtype)
            potential = mixture_potential(points, log_weights, row_std, means, self.config.chunk_elements)
            total = total + potential.reshape(x.shape[0], -1).sum(dim=1)
        return total * self.bank.energy_weight

    def score_with(self, x: Tensor, sigma: Tensor | float, derivative: DerivativeFn) -> Tensor:
        """``-w sum_j lambda_j K_j^T psi_j'(lambda_j K_j x)`` (``w`` the bank's energy weight) with a
        given ``psi'`` evaluator."""
        shape = (x.shape[-2], x.shape[-1])
        std = self.component_std(sigma_vector(sigma, x.shape[0], x))
        transfer = self.transfer(*shape, x.dtype)
        spectrum = torch.fft.rfft2(x)
        accumulated = torch.zeros_like(spectrum)
        for experts in self._chunks():
            responses = self._filter(spectrum, transfer, experts, shape)
            accumulated = accumulated + self._adjoint(
                derivative(responses, experts, std[:, experts]), transfer, experts
            )
        return -self.bank.energy_weight * torch.fft.irfft2(accumulated, s=shape)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``grad_x log p(x, sigma)``, exact, ``(B, H, W)``."""
        return self.score_with(x, sigma, self._exact_derivative)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Tweedie / MMSE estimate ``x + sigma^2 score(x, sigma)`` of the clean images."""
        return tweedie_denoise(self.score, x, sigma_vector(sigma, x.shape[0], x))

    def tables(self, sigma: Tensor, num_points: int, nodes_per_std: float | None = None) -> PotentialTables:
        """Tabulated ``psi'`` for the noise levels ``sigma`` ``(G,)`` (differentiable in the
        weights); ``nodes_per_std`` as in :func:`build_tables`."""
        std = self.component_std(sigma)
        return build_tables(self.experts, std, num_points, nodes_per_std=nodes_per_std)

    def score_tabulated(self, x: Tensor, sigma: Tensor, tables: PotentialTables, group: Tensor) -> Tensor:
        """Score with ``psi'`` interpolated from ``tables``; ``group`` ``(B,)`` picks each image's table."""
        return self.score_with(
            x, sigma, lambda responses, experts, _std: interpolate(tables, responses, group, experts)
        )

    def tabulated(self, num_points: int = 4097, nodes_per_std: float | None = 16.0) -> TabulatedPoGMDM:
        """A fast inference view of this prior (tabulated ``psi'``; see :class:`TabulatedPoGMDM`)."""
        return TabulatedPoGMDM(self, num_points, nodes_per_std)


class TabulatedPoGMDM:
    """Inference view of a :class:`PoGMDM` whose score interpolates tabulated ``psi'``.

    Tables are built once per distinct noise level (on first use) and kept while the model's
    parameters do not change; ``energy`` is exact. Satisfies ``DiffusionImagePrior``.

    Args:
        model: the prior (its parameters are shared, not copied).
        num_points: the most nodes per table (error vs the exact form is checked in the tests).
        nodes_per_std: nodes per component width ``s`` at the level's narrowest expert (see
            :func:`build_tables`); ``None`` always uses ``num_points``. 16 needs 1,100-2,250
            nodes for the shipped shearlet prior (0.1 >= sigma >= 0) instead of 4,097, and
            keeps the relative score error within about 1.1x of the full table's at small
            sigma (5.3e-4 against 5.0e-4 at sigma 0.001); a MAP continuation builds one table
            per iteration, so this halves to thirds that cost.
    """

    max_cached_levels = 512

    def __init__(self, model: PoGMDM, num_points: int = 4097, nodes_per_std: float | None = 16.0) -> None:
        self.model = model
        self.num_points = int(num_points)
        self.nodes_per_std = nodes_per_std
        self._tables: dict[tuple[object, ...], PotentialTables] = {}

    def table_for(self, sigma: float, device: torch.device, dtype: torch.dtype) -> PotentialTables:
        """The tables of one noise level (cached per level, device, dtype and parameter version)."""
        nodes_per_std = self.nodes_per_std
        key = (sigma, device, dtype, nodes_per_std, parameter_versions(self.model))

        def build() -> PotentialTables:
            level = torch.tensor([sigma], device=device, dtype=dtype)
            return self.model.tables(level, self.num_points, nodes_per_std)

        return cached_value(self._tables, key, build, self.max_cached_levels)

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return self.model.energy(x, sigma)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``(B, H, W)`` tabulated score (no autograd through the tables)."""
        sigma_b = sigma_vector(sigma, x.shape[0], x)
        levels, group = torch.unique(sigma_b, return_inverse=True)
        # Several levels (slices of a batch): their tables stacked, the shorter ones padded.
        parts = [self.table_for(float(level), x.device, x.dtype) for level in levels.tolist()]
        tables = parts[0] if len(parts) == 1 else stack_tables(parts)
        with torch.no_grad():
            return self.model.score_tabulated(x, sigma_b, tables, group)

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Tweedie / MMSE estimate ``x + sigma^2 score(x, sigma)`` of the clean images."""
        return tweedie_denoise(self.score, x, sigma_vector(sigma, x.shape[0], x))
