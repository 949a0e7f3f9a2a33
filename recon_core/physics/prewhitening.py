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

from recon_core.physics.kspace import KSpaceSlice

#: Smallest eigenvalue of a usable noise covariance relative to its largest. Below it the coils'
#: noise is linearly dependent up to the covariance's complex64 rounding (a duplicated channel
#: gives about 1e-7), and whitening would amplify noise along that direction without bound.
MIN_RELATIVE_EIGENVALUE = 1e-5


def noise_covariance(noise_samples: Tensor) -> Tensor:
    """Sample covariance of multi-coil noise.

    Args:
        noise_samples: ``(C, N)`` complex noise readouts (all readouts concatenated).

    Returns:
        ``(C, C)`` complex64 Hermitian covariance ``n n^H / N``.

    Raises:
        ValueError: for a wrong shape, fewer samples than coils, or samples that say what is
            wrong rather than let the whitening fail later: non-finite samples (naming the
            coils), an all-zero noise scan, or coils that recorded only zeros.
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
    finite = torch.isfinite(torch.view_as_real(noise_samples)).all(dim=-1).all(dim=-1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"the noise scan holds non-finite samples (NaN or Inf) in coil(s) {_coils(bad)}")
    silent = (noise_samples == 0).all(dim=-1)
    if bool(silent.all()):
        raise ValueError("the noise scan is all zero: no receiver noise was recorded")
    if bool(silent.any()):
        dead = torch.nonzero(silent).flatten().tolist()
        raise ValueError(f"coil(s) {_coils(dead)} recorded only zeros in the noise scan (dead coil?)")
    samples = noise_samples.to(torch.complex128)
    covariance = samples @ samples.conj().T / count
    return covariance.to(torch.complex64)


def whitening_matrix(covariance: Tensor) -> Tensor:
    """``W = L^{-1}`` with ``covariance = L L^H`` (Cholesky), computed in float64.

    Raises:
        ValueError: if the covariance is not Hermitian positive definite, naming why: NaN or
            Inf entries, coils of zero noise variance, or (otherwise) linearly dependent coils
            (smallest eigenvalue at most :data:`MIN_RELATIVE_EIGENVALUE` of the largest).
    """
    psi = covariance.to(torch.complex128)
    if not bool(torch.isfinite(torch.view_as_real(psi)).all()):
        raise ValueError("the noise covariance holds NaN or Inf (non-finite noise samples)")
    psi = 0.5 * (psi + psi.conj().T)
    variance = torch.diagonal(psi).real
    if bool((variance <= 0).any()):
        silent = torch.nonzero(variance <= 0).flatten().tolist()
        raise ValueError(
            f"noise covariance is not positive definite: coil(s) {_coils(silent)} have zero noise "
            "variance (all-zero noise samples)"
        )
    eigenvalues = torch.linalg.eigvalsh(psi)
    factor, info = torch.linalg.cholesky_ex(psi)
    if int(info) != 0 or float(eigenvalues[0]) <= MIN_RELATIVE_EIGENVALUE * float(eigenvalues[-1]):
        raise ValueError(
            "noise covariance is not positive definite: the coils' noise is linearly dependent "
            f"(a duplicated or combined coil channel?): smallest / largest eigenvalue "
            f"{float(eigenvalues[0]) / float(eigenvalues[-1]):.1e}"
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


def _coils(indices: list[int], shown: int = 8) -> str:
    """``"[0, 3]"``, or the first few and a count for many coils."""
    if len(indices) <= shown:
        return str(indices)
    return f"{indices[:shown]} and {len(indices) - shown} more"
