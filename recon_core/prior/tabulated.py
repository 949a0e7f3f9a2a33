"""Tabulated expert derivatives ``psi_j'(.; sigma)`` for the fast score path.

At a fixed noise level every expert's ``psi_j'`` is a fixed smooth 1D function, so it is
evaluated exactly once on a uniform grid of ``num_points`` nodes covering
``[-(a + range_stds * s), a + range_stds * s]`` (``s`` the component standard deviation) and
linearly interpolated; beyond the grid it continues with the asymptotic slope ``1 / s^2`` of
a Gaussian tail. The node spacing is at most ``(2 a / s + 2 range_stds) / (num_points - 1)``
component widths, i.e. ``s / 16`` or finer for the defaults, and the interpolation error is
measured against the exact form in the tests.

The table values are built with the differentiable exact derivative, so gradients flow back
to the mixture weights and scales (used for training); the node positions are treated as
constants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.prior.mixture import GaussianMixtureExperts, mixture_derivative

DEFAULT_TABLE_POINTS = 4097
RANGE_STDS = 8.0


@dataclass(frozen=True)
class PotentialTables:
    """``psi_j'`` sampled for ``G`` noise levels and ``J`` experts.

    Attributes:
        values: ``(G, J, N)`` ``psi'`` at the nodes (1 / response units).
        slopes: ``(G, J, N)`` ``values[n + 1] - values[n]`` (the last repeated), so that an
            interpolation needs one lookup in each table instead of two in ``values``.
        start: ``(G, J)`` first node (response units).
        spacing: ``(G, J)`` node spacing.
        inverse_variance: ``(G, J)`` ``1 / s^2``, the slope used beyond the last node.
    """

    values: Tensor
    slopes: Tensor
    start: Tensor
    spacing: Tensor
    inverse_variance: Tensor

    @property
    def num_points(self) -> int:
        return int(self.values.shape[-1])


def build_tables(
    experts: GaussianMixtureExperts,
    std: Tensor,
    num_points: int = DEFAULT_TABLE_POINTS,
    range_stds: float = RANGE_STDS,
    chunk_elements: int | None = None,
    nodes_per_std: float | None = None,
) -> PotentialTables:
    """Tabulate every expert's ``psi'`` at the component standard deviations ``std``.

    Args:
        experts: the mixtures (weights, means).
        std: ``(G, J)`` component standard deviations ``s_j(sigma_g)``.
        num_points: nodes per table (>= 2); with ``nodes_per_std`` the most nodes.
        range_stds: half-width of the table beyond the grid radius, in units of ``s``.
        chunk_elements: temporary-size bound passed to :func:`mixture_derivative`.
        nodes_per_std: if given, use only as many nodes as needed for a spacing of
            ``s / nodes_per_std`` at the smallest ``s`` (capped at ``num_points``): wide
            components give smooth ``psi'`` that need few nodes (used in training).
    """
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    groups, num_experts = std.shape
    half_width = (experts.radius + range_stds * std).detach()
    if nodes_per_std is not None:
        needed = float((2.0 * half_width / std.detach()).max()) * nodes_per_std + 1.0
        num_points = max(2, min(num_points, math.ceil(needed)))
    spacing = 2.0 * half_width / (num_points - 1)
    steps = torch.arange(num_points, device=std.device, dtype=std.dtype)
    nodes = -half_width.unsqueeze(-1) + steps * spacing.unsqueeze(-1)
    log_weights = experts.log_weights().to(std.dtype)
    rows = groups * num_experts
    kwargs = {} if chunk_elements is None else {"chunk_elements": chunk_elements}
    values = mixture_derivative(
        nodes.reshape(rows, num_points),
        log_weights.unsqueeze(0).expand(groups, -1, -1).reshape(rows, -1),
        std.reshape(rows, 1),
        experts.means.to(std.dtype),
        **kwargs,
    ).reshape(groups, num_experts, num_points)
    slopes = torch.diff(values, dim=-1)
    slopes = torch.cat((slopes, slopes[..., -1:]), dim=-1)
    return PotentialTables(values, slopes, -half_width, spacing, 1.0 / std.square())


def interpolate(tables: PotentialTables, points: Tensor, group: Tensor, experts: slice) -> Tensor:
    """Evaluate tabulated ``psi'`` at ``points``.

    Args:
        tables: from :func:`build_tables`.
        points: ``(B, F, ...)`` responses of ``F`` experts (``experts`` selects them).
        group: ``(B,)`` long, the table group (noise level) of every image.
        experts: the slice of experts that ``points`` holds.

    Returns:
        Interpolated ``psi'``, shaped like ``points``.
    """
    shape = points.shape
    points = points.reshape(shape[0], shape[1], -1)
    count = tables.num_points
    start = tables.start[group, experts].unsqueeze(-1)
    spacing = tables.spacing[group, experts].unsqueeze(-1)
    position = (points - start) / spacing
    inside = position.clamp(0.0, count - 1)
    lower = inside.detach().clamp(max=count - 2).floor()
    index = lower.long()
    below = torch.gather(tables.values[group, experts], -1, index)
    slope = torch.gather(tables.slopes[group, experts], -1, index)
    tail_slope = (tables.spacing * tables.inverse_variance)[group, experts].unsqueeze(-1)
    return (below.addcmul(inside - lower, slope) + (position - inside) * tail_slope).reshape(shape)
