"""End-to-end reconstruction on a synthetic Shepp-Logan phantom with birdcage coils."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from smooth_prior import SmoothTVPrior
from torch import Tensor

from recon_core.config import ReconConfig, load_preset
from recon_core.kspace import KSpaceSlice
from recon_core.operators import FFT2Operator
from recon_core.phantom import birdcage_coil_maps, shepp_logan
from recon_core.reconstruction import ReconResult, reconstruct
from recon_core.sampling import random_lines_mask

SIZE = 64
COILS = 8


def _phantom_slice(noise_std: float, device: torch.device, seed: int = 0) -> tuple[KSpaceSlice, Tensor]:
    """R = 4 random-line k-space of the phantom, and the RSS of the fully sampled coil images."""
    image = shepp_logan(SIZE)
    coil_images = birdcage_coil_maps(COILS, SIZE, SIZE) * image
    kspace = FFT2Operator().forward(coil_images)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.complex(
        torch.randn(kspace.shape, generator=generator), torch.randn(kspace.shape, generator=generator)
    )
    mask = random_lines_mask((SIZE, SIZE), 4.0, 0.08, seed=seed)
    covariance = None
    if noise_std > 0:
        covariance = (2.0 * noise_std**2 * torch.eye(COILS)).to(torch.complex64)
    data = KSpaceSlice(
        kspace=((kspace + noise_std * noise) * mask).to(torch.complex64),
        mask=mask,
        noise_covariance=covariance,
    )
    reference = coil_images.abs().pow(2).sum(0).sqrt()
    return data.to(device), reference.to(device)


def nmse(estimate: Tensor, reference: Tensor) -> float:
    """NMSE after the least-squares scale of ``estimate`` to ``reference``."""
    scale = (estimate * reference).sum() / (estimate * estimate).sum()
    return float(((scale * estimate - reference) ** 2).sum() / (reference**2).sum())


def test_map_reconstruction_reaches_nmse_bound(device: torch.device) -> None:
    data, reference = _phantom_slice(0.001, device)
    config = dataclasses.replace(load_preset("fast"), device=device.type)
    result = reconstruct(data, config, SmoothTVPrior())
    assert isinstance(result, ReconResult)
    assert result.image.shape == (SIZE, SIZE) and result.image.dtype == torch.float32
    assert result.std is None
    assert result.coil_maps.shape == (COILS, SIZE, SIZE) and result.coil_maps.dtype == torch.complex64
    assert nmse(result.image, reference) < 0.01


def test_bad_prior_is_rejected() -> None:
    data, _ = _phantom_slice(0.001, torch.device("cpu"))
    with pytest.raises(TypeError, match="prior"):
        reconstruct(data, ReconConfig(method="map", device="cpu"), prior=object())  # type: ignore[arg-type]
