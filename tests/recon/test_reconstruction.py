"""End-to-end reconstruction on a synthetic Shepp-Logan phantom with birdcage coils.

The prior is the small analytic ``SmoothTVPrior`` (tests/helpers/smooth_prior.py), so these tests do
not depend on the trained weights; one test runs the shipped default prior where present.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from image_metrics import nmse
from smooth_prior import SmoothTVPrior
from torch import Tensor

from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator
from recon_core.prior import default_weights_path
from recon_core.recon.config import ReconConfig, load_preset
from recon_core.recon.reconstruction import ReconResult, reconstruct
from recon_core.sim.masks import partial_fourier_mask, poisson_disc_mask, random_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

SIZE = 64
COILS = 8
NOISE_STD = 0.001  # per real component; the phantom's RSS peaks at about 0.3


def _phantom_slice(
    noise_std: float, device: torch.device, mask: Tensor | None = None, with_covariance: bool = True
) -> tuple[KSpaceSlice, Tensor]:
    """Undersampled k-space of the phantom (default: R = 4 random lines, 8 % centre) and the
    RSS of its fully sampled, noise-free coil images."""
    image = shepp_logan(SIZE)
    coil_images = birdcage_coil_maps(COILS, SIZE, SIZE) * image
    kspace = FFT2Operator().forward(coil_images)
    generator = torch.Generator().manual_seed(0)
    noise = torch.complex(
        torch.randn(kspace.shape, generator=generator), torch.randn(kspace.shape, generator=generator)
    )
    mask = random_lines_mask((SIZE, SIZE), 4.0, 0.08, seed=0) if mask is None else mask
    covariance = None
    if noise_std > 0 and with_covariance:
        covariance = (2.0 * noise_std**2 * torch.eye(COILS)).to(torch.complex64)
    data = KSpaceSlice(
        kspace=((kspace + noise_std * noise) * mask).to(torch.complex64),
        mask=mask,
        noise_covariance=covariance,
    )
    reference = coil_images.abs().pow(2).sum(0).sqrt()
    return data.to(device), reference.to(device)


def _config(method: str, device: torch.device, **changes: object) -> ReconConfig:
    """The fast preset, small enough for a unit test."""
    base = dataclasses.replace(
        load_preset("fast"),
        method=method,
        device=device.type,
        num_chains=4,
        num_noise_levels=5,
        steps_per_level=4,
        # SmoothTVPrior's Charbonnier width (0.02) is in absolute intensity: its bounds below
        # were set with the phantom's central maximum at 1. The whole-image maximum (the
        # default scale) is the birdcage-weighted rim, which halves the interior's contrasts
        # against that width (NMSE 0.0024 -> 0.0139 noise-free), an artefact of the test prior.
        scale_region=0.5,
    )
    return dataclasses.replace(base, **changes)


def _zero_filled_nmse(data: KSpaceSlice, reference: Tensor) -> float:
    return nmse(FFT2Operator().adjoint(data.kspace).abs().pow(2).sum(0).sqrt(), reference)


@pytest.mark.parametrize("image_model", ["complex", "magnitude"])
@pytest.mark.parametrize("noise_std", [0.0, NOISE_STD])
def test_map_reaches_nmse_bound(noise_std: float, image_model: str, device: torch.device) -> None:
    data, reference = _phantom_slice(noise_std, device)
    result = reconstruct(data, _config("map", device, image_model=image_model), SmoothTVPrior())
    assert isinstance(result, ReconResult)
    assert result.image.shape == (SIZE, SIZE) and result.image.dtype == torch.float32
    assert result.image.device.type == device.type
    assert result.std is None
    assert result.coil_maps.shape == (COILS, SIZE, SIZE) and result.coil_maps.dtype == torch.complex64
    assert _zero_filled_nmse(data, reference) > 0.3  # the problem is not trivial
    assert nmse(result.image, reference) < 0.005
    assert result.info["image_model"] == image_model
    assert result.info["noise_source"] == ("prescan" if noise_std > 0 else "estimated")


@pytest.mark.parametrize("image_model", ["complex", "magnitude"])
@pytest.mark.parametrize("noise_std", [0.0, NOISE_STD])
def test_posterior_reaches_nmse_bound_with_finite_std(
    noise_std: float, image_model: str, device: torch.device
) -> None:
    data, reference = _phantom_slice(noise_std, device)
    result = reconstruct(data, _config("posterior", device, image_model=image_model), SmoothTVPrior())
    assert nmse(result.image, reference) < 0.01
    assert result.std is not None and result.std.shape == (SIZE, SIZE) and result.std.dtype == torch.float32
    assert bool(torch.isfinite(result.std).all())
    on_object = reference > 0.05 * reference.max()
    assert bool((result.std[on_object] > 0).all())  # zero-free where the object is
    # units: the std is in the units of the input, like the image
    assert float(result.std[on_object].median()) < 0.2 * float(result.image.max())


def test_same_seed_same_result(device: torch.device) -> None:
    data, _ = _phantom_slice(NOISE_STD, device)
    config = _config("posterior", device, num_noise_levels=6, steps_per_level=2, seed=11, map_iterations=20)
    first = reconstruct(data, config, SmoothTVPrior())
    second = reconstruct(data, config, SmoothTVPrior())
    other = reconstruct(data, dataclasses.replace(config, seed=12), SmoothTVPrior())
    assert first.std is not None and second.std is not None
    assert torch.equal(first.image, second.image)
    assert torch.equal(first.std, second.std)
    assert torch.equal(first.coil_maps, second.coil_maps)
    assert not torch.equal(first.image, other.image)


def test_progress_is_reported(device: torch.device) -> None:
    data, _ = _phantom_slice(NOISE_STD, device)
    calls: list[tuple[int, int]] = []
    config = _config(
        "posterior",
        device,
        num_noise_levels=4,
        steps_per_level=3,
        initialisation="zero_filled",
        sigma_max=0.4,
        sigma_min=0.01,
    )
    result = reconstruct(
        data, config, SmoothTVPrior(), progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(step, 12) for step in range(1, 13)]
    assert result.info["iterations"] == 12
    calls.clear()
    warm = dataclasses.replace(config, initialisation="map", map_iterations=5)
    result = reconstruct(
        data, warm, SmoothTVPrior(), progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(step, 17) for step in range(1, 18)]  # 5 MAP iterations, then 12 Langevin steps
    assert result.info["iterations"] == 17
    calls.clear()
    reconstruct(
        data,
        _config("map", device, map_iterations=7),
        SmoothTVPrior(),
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(step, 7) for step in range(1, 8)]


@pytest.mark.parametrize(
    "mask",
    [
        pytest.param(poisson_disc_mask((SIZE, SIZE), 4.0, seed=0), id="poisson-disc-no-calibration"),
        pytest.param(partial_fourier_mask(random_lines_mask((SIZE, SIZE), 3.0, 0.1, seed=0), 0.625), id="pf"),
    ],
)
def test_other_sampling_patterns(mask: Tensor, device: torch.device) -> None:
    data, reference = _phantom_slice(NOISE_STD, device, mask=mask)
    result = reconstruct(data, _config("map", device), SmoothTVPrior())
    assert nmse(result.image, reference) < 0.015


def test_output_units_follow_the_input(device: torch.device) -> None:
    """The normalisation is undone: without a noise covariance the image scales with the data;
    with one, the image is in prewhitened (SNR) units, unchanged by a rescaling of the data."""
    data, _ = _phantom_slice(NOISE_STD, device, with_covariance=False)
    config = _config("map", device, map_iterations=20)
    base = reconstruct(data, config, SmoothTVPrior())
    scaled = reconstruct(dataclasses.replace(data, kspace=data.kspace * 1000.0), config, SmoothTVPrior())
    torch.testing.assert_close(
        scaled.image, 1000.0 * base.image, rtol=1e-3, atol=1e-3 * float(scaled.image.max())
    )
    assert scaled.info["scale_factor"] == pytest.approx(1000.0 * base.info["scale_factor"], rel=1e-5)

    whitened, _ = _phantom_slice(NOISE_STD, device)
    assert whitened.noise_covariance is not None
    rescaled = dataclasses.replace(
        whitened, kspace=whitened.kspace * 1000.0, noise_covariance=whitened.noise_covariance * 1e6
    )
    first = reconstruct(whitened, config, SmoothTVPrior())
    second = reconstruct(rescaled, config, SmoothTVPrior())
    torch.testing.assert_close(second.image, first.image, rtol=1e-3, atol=1e-3 * float(first.image.max()))


def test_bad_input_gives_clear_errors() -> None:
    device = torch.device("cpu")
    data, _ = _phantom_slice(NOISE_STD, device)
    with pytest.raises(TypeError, match="prior"):
        reconstruct(data, _config("map", device), prior=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="KSpaceSlice"):
        reconstruct(data.kspace, _config("map", device), SmoothTVPrior())  # type: ignore[arg-type]
    empty = dataclasses.replace(data, kspace=torch.zeros_like(data.kspace), noise_covariance=None)
    with pytest.raises(ValueError, match=r"noise|scale"):
        reconstruct(empty, _config("map", device), SmoothTVPrior())
    with pytest.raises(ValueError, match="num_chains"):
        ReconConfig(method="posterior", num_chains=1)
    with pytest.raises(ValueError, match="coil_init_cutoff"):
        ReconConfig(coil_init_cutoff=0.0)


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped prior weights not present yet")
def test_default_prior_is_loaded(device: torch.device) -> None:
    """``prior=None`` runs the shipped PoGMDM; its quality is measured by bench/quality.py."""
    data, reference = _phantom_slice(NOISE_STD, device)
    result = reconstruct(data, _config("map", device, map_iterations=40))
    assert bool(torch.isfinite(result.image).all())
    assert nmse(result.image, reference) < _zero_filled_nmse(data, reference)


def test_virtual_coils_compress_and_keep_the_image(device: torch.device) -> None:
    data, reference = _phantom_slice(NOISE_STD, device)
    full = reconstruct(data, _config("map", device), SmoothTVPrior())
    compressed = reconstruct(data, _config("map", device, virtual_coils=4), SmoothTVPrior())
    assert compressed.info["coils"] == 4 and full.info["coils"] == COILS
    assert full.info["coil_compression_energy"] is None
    assert 0.9 < compressed.info["coil_compression_energy"] < 1.0
    assert compressed.coil_maps.shape == (4, SIZE, SIZE)
    assert nmse(compressed.image, reference) < 1.5 * nmse(full.image, reference) + 1e-4
    with pytest.raises(ValueError, match="virtual_coils"):
        _config("map", device, virtual_coils=-2)
