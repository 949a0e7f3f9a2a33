"""Coil compression: the measured k-space of ``C`` coils projected onto ``V < C`` virtual coils.

The virtual coils are the ``V`` dominant left singular vectors of the ``(C, N)`` matrix of all
measured k-space samples (Buehrer et al., MRM 2007; Huang et al., MRI 2008: PCA / SVD coil
compression), computed from the ``(C, C)`` Gram matrix ``Y Y^H``. The compression matrix
``A`` ``(V, C)`` has orthonormal rows, so

* white noise stays white with the same variance (``A A^H = I``): apply it after prewhitening,
  and the noise level of the data is unchanged;
* the virtual coils keep the fraction ``sum_{v <= V} s_v^2 / sum_c s_c^2`` of the signal energy
  (:attr:`Compression.energy`).

Every forward / adjoint model evaluation and coil step of the reconstruction costs in
proportion to the number of coils, so ``V`` coils cost about ``V / C`` of the data-term work.
Measured on the Berkeley brain and the 32-coil synthetic slice: docs/benchmarks.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.physics.kspace import KSpaceSlice


@dataclass(frozen=True)
class Compression:
    """``matrix`` ``(V, C)`` with orthonormal rows and ``energy``, the fraction of the measured
    samples' energy the ``V`` virtual coils keep (in [0, 1])."""

    matrix: Tensor
    energy: float


def compression_matrix(kspace: Tensor, mask: Tensor, virtual_coils: int) -> Compression:
    """The SVD compression of ``kspace`` ``(C, ky, kx)`` (zeros where ``mask`` ``(ky, kx)`` is
    false) to ``virtual_coils`` coils.

    Raises:
        ValueError: for ``virtual_coils`` outside ``[1, C]`` or no measured sample.
    """
    coils = kspace.shape[0]
    if not 1 <= virtual_coils <= coils:
        raise ValueError(f"virtual_coils must be in [1, {coils}] for {coils} coils, got {virtual_coils}")
    samples = kspace[:, mask.to(torch.bool)]
    if samples.shape[1] == 0:
        raise ValueError("coil compression needs measured samples; the mask is empty")
    samples = samples.to(torch.complex128)
    gram = samples @ samples.conj().T
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    order = torch.argsort(eigenvalues, descending=True)
    eigenvalues, eigenvectors = eigenvalues[order].clamp_min(0.0), eigenvectors[:, order]
    total = float(eigenvalues.sum())
    kept = float(eigenvalues[:virtual_coils].sum())
    matrix = eigenvectors[:, :virtual_coils].conj().T.to(kspace.dtype)
    return Compression(matrix=matrix, energy=kept / total if total > 0 else 1.0)


def compress_slice(kspace_slice: KSpaceSlice, virtual_coils: int) -> tuple[KSpaceSlice, Compression | None]:
    """``kspace_slice`` on ``virtual_coils`` virtual coils, and the compression used.

    ``virtual_coils`` 0, or not fewer than the slice's coils, returns the slice unchanged and
    ``None``; a negative count is refused by :func:`compression_matrix`. Apply after
    prewhitening: the whitened noise stays white (the compressed slice keeps ``prewhitened``;
    its ``noise_covariance`` is dropped, it described the physical coils).
    """
    if virtual_coils == 0 or virtual_coils >= kspace_slice.kspace.shape[0]:
        return kspace_slice, None
    compression = compression_matrix(kspace_slice.kspace, kspace_slice.mask, virtual_coils)
    compressed = torch.einsum("vc,c...->v...", compression.matrix, kspace_slice.kspace)  # zeros stay zeros
    return dataclasses.replace(kspace_slice, kspace=compressed, noise_covariance=None), compression
