"""Noise covariance estimation and prewhitening of multi-coil data.

With noise samples ``n`` (coils x samples) the covariance is ``Psi = n n^H / N``. With the
Cholesky factor ``Psi = L L^H`` the whitening matrix is ``W = L^{-1}``: ``W n`` has identity
covariance, so after whitening every coil carries unit-variance, uncorrelated complex noise
(``E|n|^2 = 1`` per sample) and the noise level of the data is known exactly.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from recon_core.kspace import KSpaceSlice


def noise_covariance(noise_samples: Tensor) -> Tensor:
    """Sample covariance of multi-coil noise.

    Args:
        noise_samples: ``(C, N)`` complex noise readouts (all readouts concatenated).

    Returns:
        ``(C, C)`` complex64 Hermitian covariance ``n n^H / N``.
    """
    if noise_samples.ndim != 2 or not noise_samples.is_complex():
        raise ValueError(
            f"noise samples must be complex (coils, samples), got {noise_samples.dtype} "
            f"{tuple(noise_samples.shape)}"
        )
    count = noise_samples.shape[1]
    if count < noise_samples.shape[0]:
        raise ValueError(
            f"need at least as many noise samples ({count}) as coils ({noise_samples.shape[0]}) "
            "for a full-rank noise covariance"
        )
    samples = noise_samples.to(torch.complex128)
    covariance = samples @ samples.conj().T / count
    return covariance.to(torch.complex64)


def whitening_matrix(covariance: Tensor) -> Tensor:
    """``W = L^{-1}`` with ``covariance = L L^H`` (Cholesky), computed in float64.

    Raises:
        ValueError: if the covariance is not Hermitian positive definite.
    """
    psi = covariance.to(torch.complex128)
    psi = 0.5 * (psi + psi.conj().T)
    factor, info = torch.linalg.cholesky_ex(psi)
    if int(info) != 0:
        raise ValueError(
            "noise covariance is not positive definite (a dead or duplicated coil?): "
            f"Cholesky failed at column {int(info)}"
        )
    identity = torch.eye(psi.shape[0], dtype=psi.dtype, device=psi.device)
    inverse = torch.linalg.solve_triangular(factor, identity, upper=False)
    return inverse.to(torch.complex64)


def prewhiten(data: Tensor, whitening: Tensor) -> Tensor:
    """Apply a coil whitening matrix along the coil axis.

    Args:
        data: ``(C, ...)`` complex data, coils first.
        whitening: ``(C, C)`` matrix from :func:`whitening_matrix`.
    """
    coils = data.shape[0]
    if whitening.shape != (coils, coils):
        raise ValueError(f"whitening matrix {tuple(whitening.shape)} does not fit {coils} coils")
    flat = data.reshape(coils, -1)
    return (whitening.to(data.dtype) @ flat).reshape(data.shape)


def prewhiten_slice(kspace_slice: KSpaceSlice) -> KSpaceSlice:
    """Whiten a slice by its own noise covariance (no-op if already whitened or none known)."""
    if kspace_slice.prewhitened or kspace_slice.noise_covariance is None:
        return kspace_slice
    whitening = whitening_matrix(kspace_slice.noise_covariance).to(kspace_slice.kspace.device)
    whitened = prewhiten(kspace_slice.kspace, whitening) * kspace_slice.mask
    return dataclasses.replace(kspace_slice, kspace=whitened, prewhitened=True)
