"""Tabulated ``psi'``: the segment lookup is linear interpolation of the node values with the
Gaussian tail slope beyond the grid, and it carries gradients to the points and the weights."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from recon_core.prior.mixture import GaussianMixtureExperts, mixture_derivative
from recon_core.prior.tabulated import build_tables, interpolate, stack_tables


def _experts() -> GaussianMixtureExperts:
    """Three float64 experts with distinct random (symmetric, normalised, >= 0.03) weights."""
    experts = GaussianMixtureExperts(3, 7, 1.0, 1.0).double()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(0)
        half = torch.rand(experts.half_weights.shape, generator=generator, dtype=torch.float64) + 0.5
        experts.half_weights.copy_(half / (half[:, :1] + 2.0 * half[:, 1:].sum(1, keepdim=True)))
        # Exactly symmetric means (a float32 linspace is only to rounding), so psi' is exactly odd.
        means = torch.linspace(-1.0, 1.0, 7, dtype=torch.float64)
        experts.means.copy_(0.5 * (means - means.flip(0)))
    return experts


def _node_values(experts: GaussianMixtureExperts, nodes: np.ndarray, std: Tensor) -> np.ndarray:
    """``psi_j'`` at ``nodes`` for every expert ``j``: ``(J, N)`` for ``std`` ``(J,)``."""
    points = torch.from_numpy(nodes)[None].expand(std.numel(), -1)
    log_weights = experts.log_weights().double()
    values = mixture_derivative(points, log_weights, std[:, None], experts.means.double())
    return values.detach().numpy()


def test_interpolation_is_linear_between_nodes_with_the_tail_slope_outside() -> None:
    experts = _experts()
    std = torch.tensor([[0.3, 0.5, 0.8], [0.2, 0.4, 0.6]], dtype=torch.float64)  # two levels
    tables = build_tables(experts, std, num_points=33)
    assert tables.num_points == 33
    half = (-tables.start).detach().numpy()
    generator = torch.Generator().manual_seed(1)
    points = (torch.rand(2, 3, 500, generator=generator, dtype=torch.float64) * 2 - 1) * 1.5 * half.max()
    points[:, :, :3] = torch.tensor([-1e3, 1e3, 0.0], dtype=torch.float64)
    group = torch.tensor([1, 0])
    result = interpolate(tables, points, group, slice(None))
    for b in range(2):
        level = int(group[b])
        for j in range(3):
            nodes = np.linspace(-half[level, j], half[level, j], 33)
            values = _node_values(experts, nodes, std[level])[j]
            x = points[b, j].numpy()

            tail = 1.0 / float(std[level, j]) ** 2
            expected = np.interp(x, nodes, values)
            expected = np.where(x < nodes[0], values[0] + (x - nodes[0]) * tail, expected)
            expected = np.where(x > nodes[-1], values[-1] + (x - nodes[-1]) * tail, expected)
            np.testing.assert_allclose(result[b, j].detach().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_interpolation_of_an_expert_slice_and_in_float32() -> None:
    experts = _experts()
    std = torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64)
    tables64 = build_tables(experts, std, num_points=65)
    tables32 = build_tables(experts.float(), std.float(), num_points=65)
    assert tables32.lines.dtype == torch.complex64
    points = torch.linspace(-4.0, 4.0, 101, dtype=torch.float64).repeat(1, 2, 1)
    group = torch.zeros(1, dtype=torch.long)
    full = interpolate(tables64, torch.cat((points[:, :1], points), 1), group, slice(None))
    part = interpolate(tables64, points, group, slice(1, 3))
    torch.testing.assert_close(part, full[:, 1:])
    single = interpolate(tables32, points.float(), group, slice(1, 3))
    torch.testing.assert_close(single.double(), part, rtol=1e-5, atol=1e-5)


def test_stacked_tables_of_different_lengths_give_each_table_s_values() -> None:
    """Levels of a batch: a short table padded to a long one's length looks up as alone, inside
    its grid and past its end (the padding is its tail line)."""
    experts = _experts()
    short = build_tables(experts, torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64), num_points=17)
    long = build_tables(experts, torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64), num_points=65)
    stacked = stack_tables([short, long])
    assert stacked.lines.shape == (2, 3, 66) and stacked.start.shape == (2, 3)
    points = torch.linspace(-30.0, 30.0, 601, dtype=torch.float64).repeat(2, 3, 1)
    both = interpolate(stacked, points, torch.tensor([0, 1]), slice(None))
    alone = [
        interpolate(table, points[:1], torch.zeros(1, dtype=torch.long), slice(None))
        for table in (short, long)
    ]
    torch.testing.assert_close(both, torch.cat(alone), rtol=1e-12, atol=1e-12)


def test_chunking_does_not_change_a_table() -> None:
    """The GPU builds a table in one chunk, the CPU in cache-sized ones: the same values."""
    experts = _experts().float()
    std = torch.tensor([[0.3, 0.5, 0.8], [0.2, 0.4, 0.6]])
    small = build_tables(experts, std, num_points=257, chunk_elements=7 * 3 * 2)
    whole = build_tables(experts, std, num_points=257, chunk_elements=1 << 24)
    assert torch.equal(small.lines, whole.lines)
    assert torch.equal(build_tables(experts, std, num_points=257).lines, whole.lines)


def test_interpolation_gradients_pass_autograd_checks() -> None:
    """To the points (off the nodes: the interpolant is piecewise linear; inside and beyond the
    grid) and, through the table values, to the mixture weights."""
    experts = _experts()
    std = torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64)
    group = torch.zeros(2, dtype=torch.long)
    points = torch.tensor([[-9.1, -0.33, 0.013, 0.41, 7.7]], dtype=torch.float64).repeat(2, 3, 1)
    tables = build_tables(experts, std, num_points=41)
    torch.autograd.gradcheck(
        lambda p: interpolate(tables, p, group, slice(None)), (points.clone().requires_grad_(True),)
    )

    def through_weights(half_weights: Tensor) -> Tensor:
        substituted = copy.deepcopy(experts)
        del substituted.half_weights  # a plain tensor in place of the parameter
        substituted.half_weights = half_weights
        return interpolate(build_tables(substituted, std, num_points=41), points, group, slice(None))

    weights = experts.half_weights.detach().clone().requires_grad_(True)
    torch.autograd.gradcheck(through_weights, (weights,))
