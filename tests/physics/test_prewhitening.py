"""Noise covariance and prewhitening."""

from __future__ import annotations

import pytest
import torch
from operator_checks import random_complex

from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.prewhitening import noise_covariance, prewhiten, prewhiten_slice, whitening_matrix


def _correlated_noise(coils: int, samples: int, device: torch.device, seed: int = 0) -> tuple:
    """Noise ``mixing @ white`` with a fixed mixing matrix; ``seed`` picks the white samples."""
    mixing = random_complex((coils, coils), torch.Generator().manual_seed(99), "cpu") + 3 * torch.eye(coils)
    white = random_complex((coils, samples), torch.Generator().manual_seed(seed), "cpu") / 2**0.5
    return (mixing @ white).to(device), (mixing @ mixing.conj().T).to(device)


def test_whitened_noise_has_identity_covariance(device: torch.device) -> None:
    coils = 8
    noise, true_covariance = _correlated_noise(coils, 200_000, device)
    covariance = noise_covariance(noise)
    assert torch.allclose(covariance, true_covariance, atol=0.05 * float(true_covariance.abs().max()))
    whitening = whitening_matrix(covariance)
    whitened = prewhiten(noise, whitening)
    identity = torch.eye(coils, dtype=torch.complex64, device=device)
    assert torch.allclose(noise_covariance(whitened), identity, atol=1e-4)
    # Fresh noise from the same source is white too (up to sampling error).
    fresh, _ = _correlated_noise(coils, 200_000, device, seed=1)
    assert torch.allclose(noise_covariance(prewhiten(fresh, whitening)), identity, atol=0.03)


def test_prewhiten_slice_and_shapes(device: torch.device) -> None:
    coils, height, width = 4, 8, 6
    noise, _ = _correlated_noise(coils, 5000, device, seed=2)
    kspace = random_complex((coils, height, width), torch.Generator().manual_seed(3), device)
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    mask[::2] = True
    sl = KSpaceSlice(kspace=kspace * mask, mask=mask, noise_covariance=noise_covariance(noise))
    white = prewhiten_slice(sl)
    assert white.prewhitened and white.kspace.shape == kspace.shape
    assert torch.equal(white.kspace[:, ~mask], torch.zeros_like(white.kspace[:, ~mask]))
    assert prewhiten_slice(white) is white


def test_bad_covariance_is_named() -> None:
    singular = torch.zeros(3, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match="not positive definite"):
        whitening_matrix(singular)
    with pytest.raises(ValueError, match="at least as many noise samples"):
        noise_covariance(torch.zeros(4, 2, dtype=torch.complex64))


def test_a_broken_noise_scan_says_what_is_wrong() -> None:
    noise, _ = _correlated_noise(4, 1000, torch.device("cpu"))
    not_finite = noise.clone()
    not_finite[1, 10] = complex(float("nan"), 0.0)
    not_finite[3, 0] = complex(0.0, float("inf"))
    with pytest.raises(ValueError, match=r"non-finite samples \(NaN or Inf\) in coil\(s\) \[1, 3\]"):
        noise_covariance(not_finite)
    with pytest.raises(ValueError, match="the noise scan is all zero: no receiver noise was recorded"):
        noise_covariance(torch.zeros_like(noise))
    dead = noise.clone()
    dead[2] = 0
    with pytest.raises(ValueError, match=r"coil\(s\) \[2\] recorded only zeros in the noise scan"):
        noise_covariance(dead)
    nan_covariance = noise_covariance(noise)
    nan_covariance[0, 1] = float("nan")
    with pytest.raises(ValueError, match="the noise covariance holds NaN or Inf"):
        whitening_matrix(nan_covariance)
    duplicated = noise.clone()
    duplicated[3] = duplicated[0]
    with pytest.raises(ValueError, match=r"linearly dependent \(a duplicated or combined coil channel\?\)"):
        whitening_matrix(noise_covariance(duplicated))
