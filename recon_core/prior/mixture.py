"""One-dimensional Gaussian-mixture experts on a fixed symmetric grid, diffused analytically.

Each expert ``j`` is a density on the real line (the response of one filter)::

    p_j(y; s) = sum_i w_ji N(y; mu_i, s^2),        psi_j(y; s) = -log p_j(y; s)

with the means ``mu = linspace(-a, a, K)`` fixed, ``w_j`` on the simplex and symmetric
(``w_ji = w_j,K-1-i``), and ``s`` the component standard deviation. Diffusing ``y`` with
Gaussian noise of standard deviation ``t`` widens every component: ``s^2 = sigma_0^2 + t^2``.

The derivative ``psi'`` (what the score needs) is computed in chunks by a custom autograd
function with a hand-written backward pass, so neither the forward nor the backward pass
materialises a ``(points x K)`` intermediate larger than ``chunk_elements``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

WEIGHT_FLOOR = 1e-14
"""Smallest mixture weight kept after projection (keeps ``log w`` finite)."""

DEFAULT_CHUNK_ELEMENTS = 1 << 22
"""Elements of the largest ``(rows, points, K)`` temporary (4 Mi floats = 16 MiB in float32)."""


def project_onto_simplex(values: Tensor, floor: float = WEIGHT_FLOOR) -> Tensor:
    """Euclidean projection of each row of ``values`` ``(..., K)`` onto the probability simplex.

    Sort-based algorithm (Held, Wolfe, Crowder 1974; Duchi et al. 2008), then a clamp at
    ``floor``, a renormalisation and a final clamp, so that rows are ``>= floor`` and sum to
    one up to ``K * floor``.
    Permutation-equivariant, so a symmetric row stays symmetric.
    """
    sorted_values, _ = torch.sort(values, dim=-1, descending=True)
    cumulative = sorted_values.cumsum(dim=-1) - 1.0
    ranks = torch.arange(1, values.shape[-1] + 1, device=values.device, dtype=values.dtype)
    active = sorted_values - cumulative / ranks > 0
    count = active.sum(dim=-1, keepdim=True).clamp(min=1)
    threshold = cumulative.gather(-1, count - 1) / count.to(values.dtype)
    projected = (values - threshold).clamp(min=floor)
    return (projected / projected.sum(dim=-1, keepdim=True)).clamp(min=floor)


def _chunk_length(rows: int, components: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(1, rows * components))


class _MixtureDerivative(torch.autograd.Function):
    """``psi'(y) = sum_i r_i (y - mu_i) / s^2`` with responsibilities ``r = softmax(l)``,
    ``l_i = log w_i - (y - mu_i)^2 / (2 s^2)``.

    Inputs: ``points`` ``(R, M)``, ``log_weights`` ``(R, K)``, ``std`` ``(R, 1)``, ``means``
    ``(K,)`` (constant), ``chunk_elements`` (int). Output ``(R, M)``.

    Backward (``d_i = y - mu_i``, ``m = E_r[d]``, ``e_i = d_i - m``)::

        d psi' / d y      = (1 - Var_r[d] / s^2) / s^2
        d psi' / d log w_i = r_i e_i / s^2
        d psi' / d s      = (2 m Var_r[d] + E_r[e^3]) / s^5 - 2 m / s^3
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        points: Tensor,
        log_weights: Tensor,
        std: Tensor,
        means: Tensor,
        chunk_elements: int,
    ) -> Tensor:
        ctx.save_for_backward(points, log_weights, std, means)
        ctx.chunk_elements = chunk_elements  # type: ignore[attr-defined]
        variance = std.square()
        out = torch.empty_like(points)
        step = _chunk_length(points.shape[0], means.numel(), chunk_elements)
        for start in range(0, points.shape[1], step):
            chunk = points[:, start : start + step]
            offsets = chunk.unsqueeze(-1) - means
            logits = offsets.square().div_(variance.unsqueeze(-1) * -2.0).add_(log_weights.unsqueeze(1))
            resp = torch.softmax(logits, dim=-1)
            out[:, start : start + step] = resp.mul_(offsets).sum(dim=-1) / variance
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None, None, None]:
        points, log_weights, std, means = ctx.saved_tensors  # type: ignore[attr-defined]
        chunk_elements: int = ctx.chunk_elements  # type: ignore[attr-defined]
        need_points, need_weights, need_std = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        variance = std.square()
        grad_points = torch.empty_like(points) if need_points else None
        grad_weights = torch.zeros_like(log_weights) if need_weights else None
        grad_std = torch.zeros_like(std) if need_std else None
        step = _chunk_length(points.shape[0], means.numel(), chunk_elements)
        for start in range(0, points.shape[1], step):
            chunk = points[:, start : start + step]
            grad = grad_out[:, start : start + step]
            offsets = chunk.unsqueeze(-1) - means
            logits = offsets.square().div_(variance.unsqueeze(-1) * -2.0).add_(log_weights.unsqueeze(1))
            resp = torch.softmax(logits, dim=-1)
            mean = (resp * offsets).sum(dim=-1)
            centred = offsets.sub_(mean.unsqueeze(-1))
            weighted = resp * centred
            spread = (weighted * centred).sum(dim=-1)
            if grad_points is not None:
                grad_points[:, start : start + step] = grad * (1.0 - spread / variance) / variance
            if grad_weights is not None:
                grad_weights += torch.einsum("rm,rmk->rk", grad / variance, weighted)
            if grad_std is not None:
                skew = (weighted * centred.square_()).sum(dim=-1)
                d_std = (2.0 * mean * spread + skew) / (variance.square() * std) - 2.0 * mean / (
                    variance * std
                )
                grad_std += (grad * d_std).sum(dim=-1, keepdim=True)
        return grad_points, grad_weights, grad_std, None, None


def mixture_derivative(
    points: Tensor,
    log_weights: Tensor,
    std: Tensor,
    means: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """``psi'(y; s)`` of row-wise mixtures, exact (stable softmax), chunked, differentiable.

    Args:
        points: ``(R, M)`` evaluation points ``y`` (one mixture per row).
        log_weights: ``(R, K)`` log mixture weights of each row (expanded views are fine).
        std: ``(R, 1)`` component standard deviation ``s`` of each row.
        means: ``(K,)`` component means.
        chunk_elements: bound on the size of the ``(R, chunk, K)`` temporaries.

    Returns:
        ``(R, M)`` values of ``psi'`` (units of 1 / y).
    """
    return _MixtureDerivative.apply(points, log_weights, std, means, chunk_elements)


def mixture_potential(
    points: Tensor,
    log_weights: Tensor,
    std: Tensor,
    means: Tensor,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> Tensor:
    """``psi(y; s) = -log sum_i w_i N(y; mu_i, s^2)`` row-wise, chunked; shapes as
    :func:`mixture_derivative`. Differentiable by autograd (use small inputs when tracing)."""
    variance = std.square()
    normaliser = 0.5 * torch.log(2.0 * math.pi * variance)
    step = _chunk_length(points.shape[0], means.numel(), chunk_elements)
    pieces = []
    for start in range(0, points.shape[1], step):
        offsets = points[:, start : start + step].unsqueeze(-1) - means
        logits = log_weights.unsqueeze(1) - offsets.square() / (2.0 * variance.unsqueeze(-1))
        pieces.append(normaliser - torch.logsumexp(logits, dim=-1))
    return torch.cat(pieces, dim=1)


class GaussianMixtureExperts(nn.Module):
    """``J`` symmetric Gaussian-mixture experts on the grid ``mu = linspace(-a, a, K)``.

    Parameters (learned): ``half_weights`` ``(J, (K + 1) // 2)``, the weights of the means
    ``mu >= 0`` (the rest follow by symmetry); ``scales`` ``(J,)``, the ``lambda_j >= 0`` that
    multiply the filter responses. Buffer: ``means`` ``(K,)``. ``K`` must be odd.

    Args:
        num_experts: ``J``.
        num_components: ``K`` (odd).
        radius: ``a``.
        width: ``sigma_0`` in grid spacings ``2 a / (K - 1)`` (the spec's 1 by default).
    """

    def __init__(
        self, num_experts: int, num_components: int = 125, radius: float = 0.5, width: float = 1.0
    ) -> None:
        super().__init__()
        if num_components % 2 != 1 or num_components < 3:
            raise ValueError(f"num_components must be odd and >= 3, got {num_components}")
        if not width > 0:
            raise ValueError(f"component width must be > 0, got {width}")
        self.radius = float(radius)
        self.spacing = 2.0 * self.radius / (num_components - 1)
        self.base_std = float(width) * self.spacing
        self.register_buffer("means", torch.linspace(-radius, radius, num_components))
        half = (num_components + 1) // 2
        # Heavy-tailed start (Cauchy-like profile), normalised on the full grid.
        profile = 1.0 / (1.0 + (torch.linspace(0.0, radius, half) / (0.1 * radius)) ** 2)
        self.half_weights = nn.Parameter(profile.repeat(num_experts, 1))
        self.scales = nn.Parameter(torch.ones(num_experts))
        with torch.no_grad():
            self.project_()

    @property
    def num_experts(self) -> int:
        return int(self.half_weights.shape[0])

    @property
    def num_components(self) -> int:
        return int(self.means.numel())

    def weights(self) -> Tensor:
        """``(J, K)`` full symmetric weights (rows sum to one)."""
        return torch.cat([self.half_weights[:, 1:].flip(-1), self.half_weights], dim=-1)

    def log_weights(self) -> Tensor:
        """``(J, K)`` logarithm of :meth:`weights`."""
        return torch.log(self.weights())

    def component_std(self, gains: Tensor, sigma: Tensor) -> Tensor:
        """``s_j(sigma) = sqrt(sigma_0^2 + (lambda_j eta_j sigma)^2)``.

        Args:
            gains: ``(J,)`` ``eta_j``, the gain of filter ``j`` (without ``lambda_j``).
            sigma: ``(B,)`` diffusion noise standard deviations (image units).

        Returns:
            ``(B, J)`` standard deviations in response units.
        """
        effective = (self.scales * gains).unsqueeze(0) * sigma.unsqueeze(-1)
        return torch.sqrt(self.base_std**2 + effective.square())

    @torch.no_grad()
    def project_(self) -> None:
        """Project in place: weights onto the symmetric simplex (floor 1e-14), scales to >= 0."""
        projected = project_onto_simplex(self.weights())
        centre = self.num_components // 2
        self.half_weights.copy_(projected[:, centre:])
        self.scales.clamp_(min=0.0)
