"""Posterior-mean estimates for sampling-pattern design, differentiable in the line weights.

Shapes: images ``(B, H, W)`` (real or complex), coils ``(B, C, H, W)`` (or ``(C, H, W)``)
complex with ``sum_c |s_c|^2 = 1``, k-space ``(B, C, H, W)`` on every line, line weights
``(H,)`` in [0, 1] along ky (the first image axis). Units: images on the prior's normalised scale
(max about 1); ``noise_std`` per real k-space component on that scale.

* :func:`tweedie_posterior_mean`: the prior's Tweedie denoiser of a diffused image, then the
  Gaussian posterior mean around it given the weighted lines (:func:`data_consistency`).
* :func:`unrolled_posterior_mean`: the same Tweedie step and data consistency, repeated over a
  few levels, from the coil-combined zero-filled data alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from recon_core.physics.operators import FFT2Operator
from recon_core.prior.base import DiffusionImagePrior, tweedie_denoise
from recon_core.prior.complex_prior import ComplexPartsPrior
from recon_core.prior.model import TabulatedPoGMDM


def conjugate_gradient(
    apply: Callable[[Tensor], Tensor], rhs: Tensor, start: Tensor, iterations: int
) -> Tensor:
    """``iterations`` CG steps on ``apply(x) = rhs`` (Hermitian positive definite), per batch
    entry of ``(B, H, W)`` complex tensors; differentiable (autograd through the steps)."""
    x = start
    residual = rhs - apply(x)
    direction = residual
    norm = residual.abs().square().sum(dim=(-2, -1))
    tiny = torch.finfo(norm.dtype).tiny
    for _ in range(iterations):
        image = apply(direction)
        curvature = (direction.conj() * image).real.sum(dim=(-2, -1))
        alpha = torch.where(curvature > tiny, norm / curvature.clamp_min(tiny), torch.zeros_like(norm))
        x = x + alpha[:, None, None] * direction
        residual = residual - alpha[:, None, None] * image
        new_norm = residual.abs().square().sum(dim=(-2, -1))
        beta = torch.where(norm > tiny, new_norm / norm.clamp_min(tiny), torch.zeros_like(norm))
        direction = residual + beta[:, None, None] * direction
        norm = new_norm
    return x


def data_consistency(
    denoised: Tensor,
    sigma: Tensor,
    line_weights: Tensor,
    coil_maps: Tensor,
    kspace: Tensor,
    noise_std: float,
    iterations: int,
) -> Tensor:
    """``argmin_x ||x - D||^2 / sigma^2 + ||W^(1/2) (F S x - y)||^2 / noise_std^2`` by
    ``iterations`` CG steps started at ``D`` = ``denoised`` ``(B, H, W)``; shapes as in
    :func:`tweedie_posterior_mean`. Returns ``(B, H, W)`` complex."""
    fft = FFT2Operator()
    weights = line_weights[..., :, None].unsqueeze(-3)  # (..., 1, H, 1) over (B, C, H, W)
    precision_prior = 1.0 / sigma.square()[:, None, None]
    precision_data = 1.0 / noise_std**2

    def normal(x: Tensor) -> Tensor:
        coil_kspace = fft.forward(coil_maps * x.unsqueeze(-3))
        back = (coil_maps.conj() * fft.adjoint(weights * coil_kspace)).sum(dim=-3)
        return precision_prior * x + precision_data * back

    start = denoised.to(kspace.dtype)
    measured = (coil_maps.conj() * fft.adjoint(weights * kspace)).sum(dim=-3)
    return conjugate_gradient(normal, precision_prior * start + precision_data * measured, start, iterations)


def tweedie_posterior_mean(
    prior: DiffusionImagePrior,
    diffused: Tensor,
    sigma: Tensor,
    line_weights: Tensor,
    coil_maps: Tensor,
    kspace: Tensor,
    noise_std: float,
    iterations: int = 8,
) -> Tensor:
    """One-step posterior mean: the prior's Tweedie denoiser plus data consistency.

    Args:
        prior: the image prior (its score at ``sigma``).
        diffused: ``(B, H, W)`` real diffused images ``x_t``.
        sigma: ``(B,)`` diffusion levels of ``diffused``.
        line_weights: ``(H,)`` (or ``(B, H)``) weights of the ky lines in [0, 1] (the mask).
        coil_maps: ``(B, C, H, W)`` or ``(C, H, W)`` complex RSS-normalised coils.
        kspace: ``(B, C, H, W)`` complex data ``F(s_c x0) + n`` on every line (weighted here).
        noise_std: std of the k-space noise per real component (normalised units).
        iterations: CG steps.

    Returns:
        ``(B, H, W)`` complex estimate of the clean images (``D`` itself where no line is weighted).
    """
    if diffused.ndim != 3 or kspace.ndim != 4 or kspace.shape[-2:] != diffused.shape[-2:]:
        raise ValueError(
            f"diffused must be (B, H, W) and kspace (B, C, H, W) on the same grid, got "
            f"{tuple(diffused.shape)} and {tuple(kspace.shape)}"
        )
    with torch.no_grad():
        denoised = tweedie_denoise(ComplexPartsPrior(prior).score, diffused, sigma)
    return data_consistency(denoised, sigma, line_weights, coil_maps, kspace, noise_std, iterations)


class DifferentiableScore:
    """``score(x, sigma)`` with autograd through ``x``.

    A :class:`~recon_core.prior.model.TabulatedPoGMDM` is evaluated through its cached
    ``table_for`` and its model's ``score_tabulated`` with gradients on (its own ``score``
    switches them off). Any other prior's ``score`` is called as is.
    """

    def __init__(self, prior: DiffusionImagePrior) -> None:
        self.prior = prior

    def __call__(self, x: Tensor, sigma: float) -> Tensor:
        """``(B, H, W)`` score of real images, or of the real and imaginary parts of complex ones
        (as :class:`~recon_core.prior.complex_prior.ComplexPartsPrior`)."""
        if x.is_complex():
            parts = self(torch.cat((x.real, x.imag)), sigma)
            return torch.complex(parts[: x.shape[0]], parts[x.shape[0] :])
        if not isinstance(self.prior, TabulatedPoGMDM):
            return self.prior.score(x, sigma)
        tables = self.prior.table_for(float(sigma), x.device, x.dtype)
        levels = torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device)
        group = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return self.prior.model.score_tabulated(x, levels, tables, group)


def unrolled_posterior_mean(
    score: Callable[[Tensor, float], Tensor],
    line_weights: Tensor,
    coil_maps: Tensor,
    kspace: Tensor,
    levels: tuple[float, ...],
    noise_std: float,
    iterations: int = 4,
    complex_images: bool = True,
) -> Tensor:
    """Posterior mean from the data alone: Tweedie step and data consistency, repeated.

    Starts at the coil-combined zero-filled image ``S^H F^H W y``; at each level ``sigma_k``
    of ``levels`` denoises the estimate (its real part where ``complex_images`` is false),
    ``D = x + sigma_k^2 score(x, sigma_k)``, and applies
    :func:`data_consistency` at ``sigma_k``. Unlike :func:`tweedie_posterior_mean` the
    denoiser sees the aliasing of the pattern, so the gradient also flows through the prior.
    Shapes as in :func:`tweedie_posterior_mean`; returns ``(B, H, W)`` complex.
    """
    weights = line_weights[..., :, None].unsqueeze(-3)
    fft = FFT2Operator()
    estimate = (coil_maps.conj() * fft.adjoint(weights * kspace)).sum(dim=-3)
    for level in levels:
        current = estimate if complex_images else estimate.real
        denoised = tweedie_denoise(score, current, level)
        sigma = torch.full((estimate.shape[0],), level, dtype=estimate.real.dtype)
        estimate = data_consistency(denoised, sigma, line_weights, coil_maps, kspace, noise_std, iterations)
    return estimate


def simulate_batch(
    images: Tensor, coil_maps: Tensor, sigmas: Tensor, noise_std: float, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Diffused images ``(B, H, W)`` and noisy fully sampled k-space ``(B, C, H, W)`` of the
    clean ``images`` ``(B, H, W)`` (real or complex) seen through ``coil_maps`` ``(B, C, H, W)``."""
    if images.is_complex():  # each part diffused with std sigma
        draw = torch.randn((2, *images.shape), generator=generator)
        diffusion = torch.complex(draw[0], draw[1])
    else:
        diffusion = torch.randn(images.shape, generator=generator)
    diffused = images + sigmas[:, None, None] * diffusion
    coil_kspace = FFT2Operator().forward(coil_maps * images.unsqueeze(1).to(coil_maps.dtype))
    noise = torch.randn(coil_kspace.shape, generator=generator, dtype=coil_kspace.dtype)  # unit complex
    return diffused, coil_kspace + noise_std * math.sqrt(2.0) * noise
