"""The predictor-corrector sampler on a Gaussian problem whose posterior is known in closed form.

Prior: every real and imaginary part of a complex ``H x W`` image i.i.d. ``N(0, s^2)``, diffused
exactly (``score(u, sigma) = -u / (s^2 + sigma^2)``); measurement: one coil of unit sensitivity,
``y = M F u + n`` with ``n`` of std ``sigma_n`` per real component. ``F`` is orthonormal, so in
k-space the posterior factorises: a measured coefficient has mean ``s^2 / (s^2 + sigma_n^2) y``
and variance ``s^2 sigma_n^2 / (s^2 + sigma_n^2)`` per part, an unmeasured one mean 0 and
variance ``s^2``; every pixel has the average of these variances.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm
from recon_core.physics.operators import FFT2Operator
from recon_core.prior.complex_prior import ComplexPartsPrior
from recon_core.recon.pc_sampler import sample_posterior_pc
from recon_core.recon.sampler import geometric_sigmas

SIZE = 12
CHAINS = 512
PRIOR_STD = 0.5
NOISE_STD = 0.05


class GaussianPrior:
    """``N(0, s^2)`` per pixel, diffused: a :class:`DiffusionImagePrior` with a closed form."""

    def __init__(self, std: float) -> None:
        self.std = std

    def _variance(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma_t.ndim == 1:
            sigma_t = sigma_t.reshape(-1, 1, 1)
        return self.std**2 + sigma_t**2

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return (0.5 * x.square() / self._variance(x, sigma)).flatten(1).sum(dim=1)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return -x / self._variance(x, sigma)


def _problem() -> tuple[JointDataTerm, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    mask = torch.rand(SIZE, SIZE, generator=generator) < 0.4
    truth = PRIOR_STD * torch.randn(SIZE, SIZE, dtype=torch.complex64, generator=generator) * math.sqrt(2)
    noise = NOISE_STD * math.sqrt(2) * torch.randn(SIZE, SIZE, dtype=torch.complex64, generator=generator)
    kspace = (FFT2Operator().forward(truth) + noise) * mask
    return JointDataTerm(kspace=kspace[None], mask=mask), kspace, mask


def _run(seed: int, data_term: JointDataTerm, chains: int = CHAINS) -> Tensor:
    sigmas = geometric_sigmas(1.0, 0.002, 60)
    weights = [1.0 / (NOISE_STD**2 + sigma**2) for sigma in sigmas]
    generator = torch.Generator().manual_seed(seed)
    start = (
        sigmas[0] * math.sqrt(2) * torch.randn(chains, SIZE, SIZE, dtype=torch.complex64, generator=generator)
    )
    coils = torch.ones(chains, 1, SIZE, SIZE, dtype=torch.complex64)
    result = sample_posterior_pc(
        data_term,
        ComplexPartsPrior(GaussianPrior(PRIOR_STD)),
        start,
        coils,
        sigmas,
        weights,
        corrector_steps=2,
        snr=0.16,
        coil_smoothness=0.0,
        generator=generator,
        coil_update_interval=None,
        final_denoise=False,
    )
    return result.samples


def test_recovers_the_closed_form_gaussian_posterior() -> None:
    data_term, kspace, mask = _problem()
    samples = _run(0, data_term)
    shrink = PRIOR_STD**2 / (PRIOR_STD**2 + NOISE_STD**2)
    measured_variance = PRIOR_STD**2 * NOISE_STD**2 / (PRIOR_STD**2 + NOISE_STD**2)
    variance_k = torch.where(mask, torch.tensor(measured_variance), torch.tensor(PRIOR_STD**2))
    mean = FFT2Operator().adjoint(shrink * kspace)
    pixel_variance = float(variance_k.mean())  # per real part, every pixel

    # Mean: the chains' average is within 4 standard errors of the exact mean at every pixel.
    standard_error = math.sqrt(pixel_variance / CHAINS)
    deviation = (samples.mean(dim=0) - mean).abs() / math.sqrt(2)
    assert float(deviation.max()) < 4.0 * standard_error * math.sqrt(2)
    # Variance of a pixel (averaged over pixels and both parts): within 10 %.
    sample_variance = 0.5 * float(samples.real.var(dim=0).mean() + samples.imag.var(dim=0).mean())
    assert abs(sample_variance / pixel_variance - 1.0) < 0.10
    # The measured k-space coefficients (std about 0.05): variance within 15 % (the corrector's
    # explicit data step alone widens it by up to 5 %, see recon_core.recon.pc_sampler).
    coefficients = FFT2Operator().forward(samples)
    measured = 0.5 * (coefficients.real.var(dim=0) + coefficients.imag.var(dim=0))[mask].mean()
    assert abs(float(measured) / measured_variance - 1.0) < 0.15


def test_same_seed_same_samples() -> None:
    data_term, _, _ = _problem()
    first = _run(3, data_term, chains=16)
    assert torch.equal(first, _run(3, data_term, chains=16))
    assert not torch.equal(first, _run(4, data_term, chains=16))


def test_reconstruct_with_posterior_pc(device: torch.device) -> None:
    """End to end on the phantom: the posterior_pc preset's method reaches the NMSE bound of the
    annealed sampler, returns a finite std, reports its progress and repeats with its seed."""
    from image_metrics import nmse
    from smooth_prior import SmoothTVPrior
    from test_reconstruction import NOISE_STD as PHANTOM_NOISE
    from test_reconstruction import _phantom_slice

    from recon_core.recon.config import load_preset
    from recon_core.recon.reconstruction import reconstruct

    data, reference = _phantom_slice(PHANTOM_NOISE, device)
    config = dataclasses.replace(
        load_preset("posterior_pc"),
        device=device.type,
        num_chains=4,
        num_noise_levels=8,
        map_iterations=30,
        scale_region=0.5,  # the test prior's width is absolute: as tests/recon/test_reconstruction.py
    )
    calls: list[tuple[int, int]] = []
    result = reconstruct(data, config, SmoothTVPrior(), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(step, 44) for step in range(1, 45)]  # 30 MAP iterations, 7 x (1 + 1) moves
    assert nmse(result.image, reference) < 0.01
    assert result.std is not None and bool(torch.isfinite(result.std).all())
    on_object = reference > 0.05 * reference.max()
    assert bool((result.std[on_object] > 0).all())
    again = reconstruct(data, config, SmoothTVPrior())
    assert torch.equal(result.image, again.image) and torch.equal(result.std, again.std)  # type: ignore[arg-type]


def test_config_of_the_pc_method() -> None:
    from recon_core.recon.config import ReconConfig, load_preset

    preset = load_preset("posterior_pc")
    assert preset.method == "posterior_pc" and preset.sigma_max > 0.0 and preset.sigma_min == 0.0
    with pytest.raises(ValueError, match="corrector_steps"):
        ReconConfig(method="posterior_pc", sigma_max=0.1, corrector_steps=-1)
    with pytest.raises(ValueError, match="num_noise_levels >= 2"):
        ReconConfig(method="posterior_pc", sigma_max=0.1, num_noise_levels=1)
    with pytest.raises(ValueError, match="both be set"):
        ReconConfig(method="posterior", sigma_max=0.1)  # only posterior_pc ties sigma_min alone
    with pytest.raises(ValueError, match="sigmas must decrease"):
        data_term, _, _ = _problem()
        sample_posterior_pc(
            data_term,
            GaussianPrior(1.0),
            torch.zeros(2, SIZE, SIZE),
            torch.ones(2, 1, SIZE, SIZE, dtype=torch.complex64),
            [0.1, 0.1],
            [1.0, 1.0],
            1,
            0.16,
            0.0,
            torch.Generator(),
        )
