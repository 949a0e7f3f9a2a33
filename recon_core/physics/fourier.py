"""The one centred, orthonormal FFT of the project (k-space centre at index ``n // 2``).

``centred_fft(x, dims) = fftshift(fft(ifftshift(x)))`` over ``dims`` with ``norm="ortho"``, and
``centred_ifft`` its inverse (= adjoint). Every module that goes between images and centred
k-space uses these two (or :class:`recon_core.physics.operators.FFT2Operator`, built on them).
The hot path of the reconstruction evaluates the same transform with the phase ramps of
:func:`centring_phases` instead of shifts
(:class:`recon_core.physics.operators.RampedFFT2Operator`, tested equal). Accepts torch tensors or
NumPy arrays (NumPy in, NumPy out, computed by torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

Array = TypeVar("Array", Tensor, np.ndarray)


def _dims(dims: int | Sequence[int]) -> tuple[int, ...]:
    return (dims,) if isinstance(dims, int) else tuple(dims)


def _apply(x: Array, dims: int | Sequence[int], inverse: bool) -> Array:
    tensor = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    axes = _dims(dims)
    transform = torch.fft.ifftn if inverse else torch.fft.fftn
    shifted = torch.fft.ifftshift(tensor, dim=axes)
    result = torch.fft.fftshift(transform(shifted, dim=axes, norm="ortho"), dim=axes)
    return result.numpy() if isinstance(x, np.ndarray) else result


def centred_fft(x: Array, dims: int | Sequence[int] = (-2, -1)) -> Array:
    """Image -> centred k-space along ``dims`` (unitary)."""
    return _apply(x, dims, inverse=False)


def centred_ifft(x: Array, dims: int | Sequence[int] = (-2, -1)) -> Array:
    """Centred k-space -> image along ``dims`` (unitary; the adjoint of :func:`centred_fft`)."""
    return _apply(x, dims, inverse=True)


def centring_phases(length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(psi, phi)`` with ``fftshift(fft(ifftshift(x)))[k] = phi_k * fft(psi * x)[k]``, any length.

    With the centre ``m = n // 2``: ``psi_n = exp(2 pi i m n / N)``,
    ``phi_k = exp(2 pi i m k / N) exp(-2 pi i m^2 / N)``; both ``(N,)`` complex64 on ``device``.
    """
    centre = length // 2
    index = torch.arange(length, dtype=torch.float64)
    psi = torch.polar(torch.ones_like(index), 2.0 * math.pi * centre * index / length)
    phi = psi * complex(
        math.cos(2.0 * math.pi * centre**2 / length), -math.sin(2.0 * math.pi * centre**2 / length)
    )
    return psi.to(device=device, dtype=torch.complex64), phi.to(device=device, dtype=torch.complex64)
