"""The simpler alternative bank: zero-mean, mutually orthogonal small convolution filters.

``J`` filters of ``n x n`` pixels (default 48 of 7 x 7, which span the whole zero-mean
subspace). After every optimiser step they are projected back: mean removed, then the closest
matrix with orthonormal rows (polar factor ``U V^T`` of the SVD). Their norms are free through
the expert scales ``lambda_j``.

Gain ``eta_j``: ``"l2"`` (the design card's reading: the l2 norm, the std of the response to unit
white noise; 1 after projection) or ``"max"`` (the largest frequency magnitude, as for the
shearlets). For a convolutional product of experts the l2 gain over-counts the noise: a
complete orthonormal ``n x n`` basis has ``sum_j |K_j(w)|^2 = n^2`` away from DC, so in the
linear regime the Tweedie step removes about ``n^2`` times the noise (measured: DSM loss 9.5 after
300 steps, against about 0.3 with the shearlets). ``max`` keeps ``sum_j |K_j|^2 / eta_j^2`` of
order one. ``"patch"`` keeps the l2 gain and divides the energy by ``n^2``: the product of
experts on one ``n x n`` patch, whose diffusion is exact because the filters are orthonormal,
averaged over the ``n^2`` patches that cover each pixel (the EPLL-style patch average). Its
linear-regime Tweedie step then removes ``sum_j |K_j|^2 / n^2``, i.e. all of the noise away from
DC.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from recon_core.prior.filter_bank import FilterBank, centred_positions, fourier_matrix


def dct_basis(size: int) -> Tensor:
    """``(size^2, size, size)`` orthonormal 2D DCT-II basis, DC atom first."""
    n = torch.arange(size, dtype=torch.float64)
    basis_1d = torch.cos(math.pi * (n + 0.5) * n.unsqueeze(-1) / size) * math.sqrt(2.0 / size)
    basis_1d[0] /= math.sqrt(2.0)
    atoms = torch.einsum("ay,bx->abyx", basis_1d, basis_1d).reshape(size * size, size, size)
    total_frequency = (n.unsqueeze(-1) + n).flatten()
    return atoms[torch.argsort(total_frequency, stable=True)]


class ConvFilterBank(FilterBank):
    """``J`` zero-mean, mutually orthonormal ``n x n`` filters (initialised as DCT atoms).

    Args:
        num_filters: ``J <= n^2 - 1``.
        size: ``n`` (odd, so the filter has a centre tap).
        gain: ``"l2"``, ``"max"`` or ``"patch"`` (see the module docstring).
    """

    expert_radius = 1.0

    def __init__(self, num_filters: int = 48, size: int = 7, gain: str = "l2") -> None:
        super().__init__()
        if size % 2 == 0 or not 1 <= num_filters <= size * size - 1:
            raise ValueError(f"need odd size and 1 <= num_filters <= size^2 - 1, got {num_filters}, {size}")
        if gain not in ("l2", "max", "patch"):
            raise ValueError(f"conv gain must be 'l2', 'max' or 'patch', got {gain!r}")
        self.gain_kind = gain
        self.energy_weight = 1.0 / (size * size) if gain == "patch" else 1.0
        self.kernels = nn.Parameter(dct_basis(size)[1 : num_filters + 1].to(torch.float32).clone())

    @property
    def num_filters(self) -> int:
        return int(self.kernels.shape[0])

    def labels(self) -> list[str]:
        return [f"conv {index}" for index in range(self.num_filters)]

    def transfer(self, omega_y: Tensor, omega_x: Tensor) -> Tensor:
        positions = centred_positions(self.kernels.shape[-1], self.kernels.device, self.kernels.dtype)
        basis_y = fourier_matrix(omega_y, positions)
        basis_x = fourier_matrix(omega_x, positions)
        kernels = self.kernels.to(basis_y.dtype)
        return basis_y @ kernels @ basis_x.T

    def gains(self) -> Tensor:
        if self.gain_kind == "max":
            return self.max_gain()
        return self.kernels.flatten(1).norm(dim=1)

    @torch.no_grad()
    def project_(self) -> None:
        """Zero mean, then the nearest matrix with orthonormal rows (polar decomposition)."""
        flat = self.kernels.flatten(1)
        flat = flat - flat.mean(dim=1, keepdim=True)
        left, _, right_t = torch.linalg.svd(flat.to(torch.float64), full_matrices=False)
        self.kernels.copy_((left @ right_t).reshape_as(self.kernels).to(self.kernels.dtype))
