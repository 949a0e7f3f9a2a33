"""The one centred, orthonormal FFT of the project (k-space centre at index ``n // 2``).

``centred_fft(x, dims) = fftshift(fft(ifftshift(x)))`` over ``dims`` with ``norm="ortho"``, and
``centred_ifft`` its inverse (= adjoint). Every module that goes between images and centred
k-space uses these two (or :class:`recon_core.physics.operators.FFT2Operator`, built on them); the
joint data term evaluates the same transform with phase ramps instead of shifts
(:mod:`recon_core.physics.data_term`, tested equal). Accepts torch tensors or NumPy arrays (NumPy in,
NumPy out, computed by torch).
"""

from __future__ import annotations

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
