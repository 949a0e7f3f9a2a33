"""Small composable linear operators for the multi-coil MRI forward model.

Axis order, used everywhere in ``recon_core``:

* image:        ``(*batch, H, W)`` complex64, ``H`` = phase-encode (ky) direction,
  ``W`` = readout (kx) direction.
* coil images:  ``(*batch, C, H, W)`` complex64.
* k-space:      ``(*batch, C, ky, kx)`` complex64, the same grid as the coil images
  (centred: DC at index ``(ky // 2, kx // 2)``).

Every operator has ``forward`` (also ``__call__``), ``adjoint``, ``.H`` (the adjoint as an
operator), ``gram`` (``A^H A``, cheap where the structure allows) and composes with ``@``::

    forward_op = mask_op @ fft_op @ coil_op      # A = M F S
    y = forward_op(x);  x_adj = forward_op.H(y);  x_normal = forward_op.gram(x)

Operators hold no hidden state between calls; they are device-agnostic: the tensors they
hold (masks, coil maps) decide the device, and inputs must be on the same device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon_core.physics.fourier import centred_fft, centred_ifft, centring_phases


class LinearOperator:
    """Base class: a linear map with an explicit adjoint."""

    def forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def gram(self, x: Tensor) -> Tensor:
        """``A^H A x``; subclasses override where structure makes it cheaper."""
        return self.adjoint(self.forward(x))

    def __call__(self, x: Tensor) -> Tensor:
        return self.forward(x)

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - the conventional name for the adjoint
        return AdjointOperator(self)

    def __matmul__(self, other: LinearOperator) -> LinearOperator:
        if not isinstance(other, LinearOperator):
            return NotImplemented
        return ProductOperator(self, other)


class AdjointOperator(LinearOperator):
    """The adjoint ``A^H`` of an operator as an operator of its own."""

    def __init__(self, operator: LinearOperator) -> None:
        self.operator = operator

    def forward(self, x: Tensor) -> Tensor:
        return self.operator.adjoint(x)

    def adjoint(self, y: Tensor) -> Tensor:
        return self.operator.forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.operator


class ProductOperator(LinearOperator):
    """``outer @ inner``: apply ``inner`` first. Gram is ``inner^H (outer^H outer) inner``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        self.outer = outer
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.outer.forward(self.inner.forward(x))

    def adjoint(self, y: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def gram(self, x: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.gram(self.inner.forward(x)))


class IdentityOperator(LinearOperator):
    """``I``: returns its input."""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def adjoint(self, y: Tensor) -> Tensor:
        return y

    def gram(self, x: Tensor) -> Tensor:
        return x


class FFT2Operator(LinearOperator):
    """Centred, orthonormal 2D FFT over the last two axes.

    ``forward``: image ``(..., H, W)`` -> k-space ``(..., H, W)``, DC at ``(H // 2, W // 2)``.
    Unitary, so the adjoint is the inverse FFT and the gram is the identity.
    """

    dims = (-2, -1)

    def forward(self, x: Tensor) -> Tensor:
        return centred_fft(x, self.dims)

    def adjoint(self, y: Tensor) -> Tensor:
        return centred_ifft(y, self.dims)

    def gram(self, x: Tensor) -> Tensor:
        return x


class RampedFFT2Operator(LinearOperator):
    """The centred FFT without shifts, the reconstruction's fast path: ``F' = conj(phi) F``.

    ``forward(x) = fft2(psi * x)`` (orthonormal) on an ``H x W`` grid, with the fixed phase ramps
    ``psi`` (image side) and ``phi`` (k-space side) of
    :func:`~recon_core.physics.fourier.centring_phases`, so that :class:`FFT2Operator` is
    ``phi * F'``: same transform, k-space held in the "unshifted" representation
    ``conj(phi) y`` (same norm), no ``fftshift`` copies. Unitary: the adjoint is the inverse,
    the gram the identity.

    Args:
        height, width: the grid ``H x W`` (the last two axes of its inputs).
        device: where the ramps live.

    Attributes:
        image_phase: ``psi`` ``(H, W)`` complex64; kspace_phase: ``phi`` ``(H, W)`` complex64.
    """

    def __init__(self, height: int, width: int, device: torch.device | str = "cpu") -> None:
        device = torch.device(device)
        psi_h, phi_h = centring_phases(height, device)
        psi_w, phi_w = centring_phases(width, device)
        self.image_phase = psi_h[:, None] * psi_w[None, :]
        self.kspace_phase = phi_h[:, None] * phi_w[None, :]

    def forward(self, x: Tensor) -> Tensor:
        return torch.fft.fft2(x * self.image_phase, norm="ortho")

    def adjoint(self, y: Tensor) -> Tensor:
        return torch.fft.ifft2(y, norm="ortho") * self.image_phase.conj()

    def gram(self, x: Tensor) -> Tensor:
        return x


class RampedRowFFTOperator(LinearOperator):
    """:class:`RampedFFT2Operator` along the phase-encode axis (``-2``) only: ``fft(psi * x)``.

    The reconstruction's fast path for masks that sample whole readouts (every ky row fully
    acquired or not at all): the centred FFT factors as ``F = F_x F_y`` (unitary along each
    axis), and the mask commutes with ``F_x``, so ``||M F z - y|| = ||M F_y z - F_x^H y||``.
    The data are moved to the hybrid ``(ky, x)`` space once, and every model evaluation needs
    one 1D FFT instead of a 2D one (half the transform work on a 180 x 230 grid). Unitary.

    Args:
        height: ``H``, the length of axis ``-2``.
        device: where the ramps live.

    Attributes:
        image_phase: ``psi`` ``(H, 1)`` complex64; kspace_phase: ``phi`` ``(H, 1)`` complex64.
    """

    def __init__(self, height: int, device: torch.device | str = "cpu") -> None:
        psi, phi = centring_phases(height, torch.device(device))
        self.image_phase = psi[:, None]
        self.kspace_phase = phi[:, None]

    def forward(self, x: Tensor) -> Tensor:
        return torch.fft.fft(x * self.image_phase, dim=-2, norm="ortho")

    def adjoint(self, y: Tensor) -> Tensor:
        return torch.fft.ifft(y, dim=-2, norm="ortho") * self.image_phase.conj()

    def gram(self, x: Tensor) -> Tensor:
        return x


def samples_whole_readouts(mask: Tensor) -> bool:
    """True if every row of the ``(..., ky, kx)`` mask is acquired along the whole readout or not
    at all (1D Cartesian undersampling, calibration lines and partial Fourier in ky included)."""
    rows = mask.to(torch.bool)
    return bool((rows.all(dim=-1) | ~rows.any(dim=-1)).all())


class CoilSensitivityOperator(LinearOperator):
    """Maps an image to coil images: ``(S u)_c = s_c * u``.

    Args:
        coil_maps: ``(*batch, C, H, W)`` complex sensitivities (dimensionless).

    ``forward``: ``(*batch, H, W)`` -> ``(*batch, C, H, W)``;
    ``adjoint``: ``sum_c conj(s_c) y_c``; ``gram``: ``(sum_c |s_c|^2) u``.
    """

    def __init__(self, coil_maps: Tensor) -> None:
        if coil_maps.ndim < 3:
            raise ValueError(f"coil_maps must be (*batch, C, H, W), got shape {tuple(coil_maps.shape)}")
        self.coil_maps = coil_maps

    def forward(self, x: Tensor) -> Tensor:
        return self.coil_maps * x.unsqueeze(-3)

    def adjoint(self, y: Tensor) -> Tensor:
        return (self.coil_maps.conj() * y).sum(dim=-3)

    def gram(self, x: Tensor) -> Tensor:
        return (self.coil_maps.abs() ** 2).sum(dim=-3) * x


class CartesianMaskOperator(LinearOperator):
    """Cartesian sampling: multiplies k-space by a binary mask (zeros where not acquired).

    The output keeps the full grid (unacquired samples are zero), so ``M`` is an orthogonal
    projection: self-adjoint, and its gram is itself.

    Fast path: the product is taken with a real 0/1 copy of the mask (``weights``, in
    ``dtype``), which broadcasts over complex data without a bool-to-complex conversion per call
    and gives the same values (multiplying by exactly 0 or 1).

    Args:
        mask: ``(ky, kx)`` (or anything broadcastable to the k-space) bool or 0/1 tensor.
        dtype: real dtype of the 0/1 weights (the data's real dtype; float32 by default).
    """

    def __init__(self, mask: Tensor, dtype: torch.dtype = torch.float32) -> None:
        if mask.ndim < 2:
            raise ValueError(f"mask must have at least 2 axes (ky, kx), got shape {tuple(mask.shape)}")
        self.mask = mask.to(torch.bool)
        self.weights = self.mask.to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights

    def adjoint(self, y: Tensor) -> Tensor:
        return y * self.weights

    def gram(self, x: Tensor) -> Tensor:
        return x * self.weights


def multicoil_forward_operator(coil_maps: Tensor, mask: Tensor) -> LinearOperator:
    """The acquisition model ``A = M F S`` for one or a batch of 2D slices.

    Args:
        coil_maps: ``(*batch, C, H, W)`` complex64 sensitivities.
        mask: ``(ky, kx)`` sampling mask on the ``H x W`` grid.
    """
    return CartesianMaskOperator(mask) @ FFT2Operator() @ CoilSensitivityOperator(coil_maps)
