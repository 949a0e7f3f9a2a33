"""Tabulated expert derivatives ``psi_j'(.; sigma)`` for the fast score path.

At a fixed noise level every expert's ``psi_j'`` is a fixed smooth odd 1D function, so it is
evaluated exactly once on (the upper half of) a uniform grid of ``num_points`` nodes covering
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
# Bound on the (rows, points, K) temporaries of the exact mixture while tabulating: 1 MiB of
# float32 stays in cache; the mixture's general default (2^22) took about twice as long per
# table on one CPU thread (shipped shearlet prior, 20 experts x 1,100 nodes). Same values.
TABLE_CHUNK_ELEMENTS = 1 << 18
# On a GPU the chunks only add kernel launches (about six per chunk): a table of the shipped
# prior (20 experts x up to 2,250 nodes x 125 components, 11 MB at most) is built in one chunk.
# Chunking does not change a value (every point's softmax is its own), so CPU and GPU tables agree.
ACCELERATOR_TABLE_CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class PotentialTables:
    """``psi_j'`` sampled for ``G`` noise levels and ``J`` experts, stored as line segments.

    With ``p = (x - start) / spacing`` the position in node units (node ``n`` at ``p = n``,
    ``n = 0 .. N - 1``), segment ``k = clamp(floor(p) + 1, 0, N)`` holds the line
    ``psi'(x) = Re(lines_k) + Im(lines_k) * p``: segments ``1 .. N - 1`` interpolate between
    nodes ``k - 1`` and ``k``, segment ``0`` (below the first node) and segment ``N`` (from the
    last node on) continue with the Gaussian tail slope ``spacing / s^2``. Intercept and slope
    share one complex entry, so an interpolation is one lookup.

    Attributes:
        lines: ``(G, J, N + 1)`` complex (``complex64`` for float32 tables): intercept (real
            part, 1 / response units) and slope per node (imaginary part).
        start: ``(G, J)`` first node (response units).
        spacing: ``(G, J)`` node spacing.
    """

    lines: Tensor
    start: Tensor
    spacing: Tensor

    @property
    def num_points(self) -> int:
        """``N``, the nodes per table."""
        return int(self.lines.shape[-1]) - 1


def _segment_lines(values: Tensor, tail_slope: Tensor) -> Tensor:
    """``(G, J, N + 1)`` complex lines (see :class:`PotentialTables`) from node values ``(G, J, N)``
    and the tail slope per node ``(G, J)``; intercepts are formed in float64 (they are
    differences of values up to ``N`` slopes apart)."""
    wide = values.double()
    tail = tail_slope.double().unsqueeze(-1)
    count = values.shape[-1]
    slopes = torch.cat((tail, torch.diff(wide, dim=-1), tail), dim=-1)
    # Segment k starts at node k - 1 (segment 0: one node below the first, on the tail line).
    starts = torch.cat((wide[..., :1] - tail, wide), dim=-1)
    nodes = torch.arange(-1, count, device=values.device, dtype=torch.float64)
    return torch.complex(starts - nodes * slopes, slopes).to(
        torch.complex128 if values.dtype == torch.float64 else torch.complex64
    )


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
        chunk_elements: temporary-size bound passed to :func:`mixture_derivative`
            (``None``: ``TABLE_CHUNK_ELEMENTS`` on a CPU, ``ACCELERATOR_TABLE_CHUNK_ELEMENTS``
            elsewhere).
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
    # psi' is odd (symmetric weights on the symmetric grid of means) and the nodes are
    # symmetric about 0: evaluate the upper half (node index >= N // 2) only and mirror it.
    lower = num_points // 2
    steps = torch.arange(lower, num_points, device=std.device, dtype=std.dtype) - (num_points - 1) / 2.0
    nodes = steps * spacing.unsqueeze(-1)
    log_weights = experts.log_weights().to(std.dtype)
    rows = groups * num_experts
    if chunk_elements is None:
        on_cpu = std.device.type == "cpu"
        chunk_elements = TABLE_CHUNK_ELEMENTS if on_cpu else ACCELERATOR_TABLE_CHUNK_ELEMENTS
    kwargs = {"chunk_elements": chunk_elements}
    upper = mixture_derivative(
        nodes.reshape(rows, num_points - lower),
        log_weights.unsqueeze(0).expand(groups, -1, -1).reshape(rows, -1),
        std.reshape(rows, 1),
        experts.means.to(std.dtype),
        **kwargs,
    ).reshape(groups, num_experts, num_points - lower)
    values = torch.cat((-upper.flip(-1)[..., :lower], upper), dim=-1)
    lines = _segment_lines(values, spacing / std.square())
    return PotentialTables(lines, -half_width, spacing)


def stack_tables(parts: list[PotentialTables]) -> PotentialTables:
    """The tables of several noise levels as one (groups concatenated in order).

    Tables with fewer nodes are padded with copies of their last segment: it is the Gaussian
    tail's line, valid for every position from the last node on, so a lookup past a short
    table's end gives the same value as in the table alone.
    """
    segments = max(part.lines.shape[-1] for part in parts)
    lines = [
        torch.cat(
            (
                part.lines,
                part.lines[..., -1:].expand(*part.lines.shape[:-1], segments - part.lines.shape[-1]),
            ),
            -1,
        )
        for part in parts
    ]
    return PotentialTables(
        torch.cat(lines),
        torch.cat([part.start for part in parts]),
        torch.cat([part.spacing for part in parts]),
    )


def interpolate(tables: PotentialTables, points: Tensor, group: Tensor, experts: slice) -> Tensor:
    """Evaluate tabulated ``psi'`` at ``points``.

    One ``index_select`` of the segment lines (int32 indices into the flattened tables) and one
    ``addcmul`` per point.

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
    num_experts, segments = tables.lines.shape[1:]
    chosen = torch.arange(num_experts, device=points.device)[experts]
    table = (group.to(points.device).unsqueeze(-1) * num_experts + chosen).unsqueeze(-1)  # (B, F, 1)
    start = tables.start.reshape(-1)[table]
    spacing = tables.spacing.reshape(-1)[table]
    position = (points - start) / spacing
    # Truncation is floor here: the clamp makes the shifted position non-negative.
    segment = (position.detach() + 1.0).clamp_(0.0, segments - 1).to(torch.int32)
    segment += (table * segments).to(torch.int32)
    lines = tables.lines.reshape(-1).index_select(0, segment.reshape(-1)).reshape(segment.shape)
    return torch.addcmul(lines.real, position, lines.imag).reshape(shape)
