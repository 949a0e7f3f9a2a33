"""The swappable linear part of the prior: a bank of real 2D filters applied in Fourier space.

A filter bank describes ``J`` real, finite-impulse-response filters by their discrete-time
Fourier transforms (DTFT), which it can evaluate at any frequencies. Applying the bank to an
image of any size ``(H, W)`` samples the DTFT on that image's DFT grid (the filter zero-padded
to the image, centred on pixel ``(0, 0)``) and filters by FFT, i.e. with periodic boundaries.

Frequencies are in radians per pixel, ``omega = 2 pi * fftfreq(n)``; the transfer function is
stored on the half grid of ``rfft2`` (the filters are real, so the other half is redundant and
the responses are exactly the real part of the complex coefficients).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

REFERENCE_GRID = 128
"""Size of the frequency grid on which ``max |transfer|`` (the gain ``eta``) is taken."""


def dtft_1d(taps: Tensor, omega: Tensor) -> Tensor:
    """DTFT ``sum_n taps[n] exp(-i omega n)`` of a centred odd-length filter.

    Args:
        taps: ``(T,)`` real taps, ``T`` odd, tap ``T // 2`` at ``n = 0``.
        omega: frequencies (any shape), radians per sample.

    Returns:
        Complex tensor shaped like ``omega``.
    """
    centre = taps.shape[-1] // 2
    cos_1, sin_1 = torch.cos(omega), torch.sin(omega)
    # Chebyshev recurrences for cos(n w), sin(n w): two transcendental calls per point.
    cos_prev, sin_prev, cos_n, sin_n = torch.ones_like(omega), torch.zeros_like(omega), cos_1, sin_1
    real, imag = taps[centre] * cos_prev, torch.zeros_like(omega)
    for n in range(1, centre + 1):
        real = real + (taps[centre + n] + taps[centre - n]) * cos_n
        imag = imag - (taps[centre + n] - taps[centre - n]) * sin_n
        cos_prev, cos_n = cos_n, 2.0 * cos_1 * cos_n - cos_prev
        sin_prev, sin_n = sin_n, 2.0 * cos_1 * sin_n - sin_prev
    return torch.complex(real, imag)


def centred_positions(length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(length,)`` tap positions ``-(length // 2) .. length // 2``."""
    return torch.arange(length, device=device, dtype=dtype) - (length // 2)


def fourier_matrix(omega: Tensor, positions: Tensor) -> Tensor:
    """``(len(omega), len(positions))`` matrix ``exp(-i omega n)``."""
    phase = omega.unsqueeze(-1) * positions
    return torch.complex(torch.cos(phase), -torch.sin(phase))


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def half_grid_frequencies(
    height: int, width: int, device: torch.device, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """``(omega_y (H,), omega_x (W // 2 + 1,))`` of the ``rfft2`` grid of an ``H x W`` image."""
    omega_y = 2.0 * torch.pi * torch.fft.fftfreq(height, device=device, dtype=dtype)
    omega_x = 2.0 * torch.pi * torch.fft.rfftfreq(width, device=device, dtype=dtype)
    return omega_y, omega_x


class FilterBank(nn.Module):
    """Base class of a bank of ``J`` real filters.

    Subclasses implement :meth:`transfer` (the DTFT on a grid), :meth:`gains` (the ``eta_j``
    used by the analytic diffusion) and :meth:`project_` (the constraints, in place).
    """

    expert_radius: float = 0.5
    """Radius ``a`` of the expert grid that suits this bank's response range."""

    energy_weight: float = 1.0
    """Factor on the whole energy (and score): ``1 / n^2`` for a patch-averaged conv bank."""

    @property
    def num_filters(self) -> int:
        raise NotImplementedError

    def transfer(self, omega_y: Tensor, omega_x: Tensor) -> Tensor:
        """``(J, len(omega_y), len(omega_x))`` complex DTFT of every filter on the grid."""
        raise NotImplementedError

    def gains(self) -> Tensor:
        """``(J,)`` gain ``eta_j`` of every filter (real, >= 0)."""
        raise NotImplementedError

    def project_(self) -> None:
        """Enforce the constraints of the parameters in place (after an optimiser step)."""
        raise NotImplementedError

    def _reference_magnitude(self) -> Tensor:
        param = next(self.parameters())
        omega_y, omega_x = half_grid_frequencies(REFERENCE_GRID, REFERENCE_GRID, param.device, param.dtype)
        return self.transfer(omega_y, omega_x).abs()

    def max_gain(self) -> Tensor:
        """``(J,)`` ``max |transfer|`` over a ``REFERENCE_GRID``-square DFT grid."""
        return self._reference_magnitude().flatten(1).amax(dim=1)

    def half_transfer(self, height: int, width: int) -> Tensor:
        """``(J, H, W // 2 + 1)`` transfer function on the ``rfft2`` grid of an ``H x W`` image."""
        param = next(self.parameters())
        omega_y, omega_x = half_grid_frequencies(height, width, param.device, param.dtype)
        return self.transfer(omega_y, omega_x)

    def impulse_responses(self, size: int) -> Tensor:
        """``(J, size, size)`` real filters in image space, centred at ``(size // 2, size // 2)``."""
        transfer = self.half_transfer(size, size)
        kernels = torch.fft.irfft2(transfer, s=(size, size))
        return torch.fft.fftshift(kernels, dim=(-2, -1))
