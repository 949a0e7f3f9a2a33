"""Shared checks for tests: the dot-product adjointness test used for every operator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def random_complex(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> Tensor:
    """Seeded standard complex Gaussian tensor (complex64) on ``device``."""
    real = torch.randn(shape, generator=generator, dtype=torch.float32)
    imag = torch.randn(shape, generator=generator, dtype=torch.float32)
    return torch.complex(real, imag).to(device)


def adjointness_error(
    forward: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    domain_shape: tuple[int, ...],
    range_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> float:
    """Relative dot-product error ``|<Ax, y> - <x, A^H y>| / |<Ax, y>|`` on random inputs.

    Inner products are ``<a, b> = sum conj(a) b``, accumulated in complex128.
    """
    generator = torch.Generator().manual_seed(seed)
    x = random_complex(domain_shape, generator, device)
    y = random_complex(range_shape, generator, device)
    forward_x = forward(x)
    if tuple(forward_x.shape) != tuple(range_shape):
        raise AssertionError(f"forward gave shape {tuple(forward_x.shape)}, expected {range_shape}")
    adjoint_y = adjoint(y)
    if tuple(adjoint_y.shape) != tuple(domain_shape):
        raise AssertionError(f"adjoint gave shape {tuple(adjoint_y.shape)}, expected {domain_shape}")
    lhs = torch.vdot(forward_x.flatten().to(torch.complex128), y.flatten().to(torch.complex128))
    rhs = torch.vdot(x.flatten().to(torch.complex128), adjoint_y.flatten().to(torch.complex128))
    return float((lhs - rhs).abs() / lhs.abs())


def assert_adjoint(
    forward: Callable[[Tensor], Tensor],
    adjoint: Callable[[Tensor], Tensor],
    domain_shape: tuple[int, ...],
    range_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    tolerance: float = 1e-5,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> None:
    """Fail unless the dot-product test holds to ``tolerance`` for every seed."""
    for seed in seeds:
        error = adjointness_error(forward, adjoint, domain_shape, range_shape, device, seed)
        if not error < tolerance:
            raise AssertionError(
                f"adjoint test failed (seed {seed}): relative error {error:.3e} >= {tolerance}"
            )
