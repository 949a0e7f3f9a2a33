"""ESPIRiT calibration, the two-set (soft SENSE) data term and the noise-tied prior level."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from image_metrics import nmse
from operator_checks import random_complex
from smooth_prior import SmoothTVPrior

from recon_core.physics.data_term import JointDataTerm, normalised_coils
from recon_core.physics.espirit import calibration_region, espirit_maps, kernel_gram
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator, multicoil_forward_operator
from recon_core.recon.config import ReconConfig, load_preset
from recon_core.recon.map_sets import MapSetPrior, needs_second_set, second_set_fraction
from recon_core.recon.reconstruction import final_map_sigma, reconstruct
from recon_core.sim.masks import equispaced_lines_mask, poisson_disc_mask, random_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

SIZE, COILS = 64, 8


def _coil_images(height: int = SIZE) -> torch.Tensor:
    return birdcage_coil_maps(COILS, height, SIZE) * shepp_logan(height, SIZE)


def test_calibration_region_is_the_fully_sampled_centre() -> None:
    mask = equispaced_lines_mask((SIZE, SIZE), 4, 16)
    region = calibration_region(mask)
    assert region is not None
    rows, cols = region.shape
    assert cols == SIZE and 16 <= rows <= 18  # the block, plus an equispaced line that touches it
    assert bool(mask[region.ky_start : region.ky_stop, region.kx_start : region.kx_stop].all())
    poisson = calibration_region(poisson_disc_mask((SIZE, SIZE), 4.0, seed=0))
    assert poisson is not None and min(poisson.shape) >= 3
    hole = torch.ones(SIZE, SIZE, dtype=torch.bool)
    hole[SIZE // 2, SIZE // 2] = False
    assert calibration_region(hole) is None


@pytest.mark.parametrize(("height", "width", "kernel"), [(32, 24, 6), (31, 17, 5)])
def test_kernel_gram_matches_the_image_space_sum(height: int, width: int, kernel: int) -> None:
    """G(x) from the kernels' cross-correlation equals (N / k^2) sum_n V_n V_n^H, V_n the
    centred inverse DFT of kernel n zero-padded at the k-space centre (odd and even sizes)."""
    generator = torch.Generator().manual_seed(3)
    kernels = random_complex((7, 3, kernel, kernel), generator, "cpu")
    padded = torch.zeros((7, 3, height, width), dtype=torch.complex64)
    top, left = height // 2 - kernel // 2, width // 2 - kernel // 2
    padded[:, :, top : top + kernel, left : left + kernel] = kernels
    images = FFT2Operator().adjoint(padded) * ((height * width) ** 0.5 / kernel)
    direct = torch.einsum("nchw,ndhw->cdhw", images, images.conj())
    gram = kernel_gram(kernels, height, width)
    assert ((gram - direct).norm() / direct.norm()).item() < 1e-5


def test_espirit_recovers_the_coil_maps_up_to_a_phase() -> None:
    coil_images = _coil_images()
    mask = equispaced_lines_mask((SIZE, SIZE), 3, 20)
    kspace = FFT2Operator().forward(coil_images) * mask
    region = calibration_region(mask)
    assert region is not None
    espirit = espirit_maps(kspace, region, map_sets=2)
    assert espirit.maps.shape == (2, COILS, SIZE, SIZE)
    truth = normalised_coils(birdcage_coil_maps(COILS, SIZE, SIZE))
    inside = shepp_logan(SIZE) > 0.05
    agreement = (espirit.maps[0].conj() * truth).sum(0).abs()[inside]
    assert float(agreement.quantile(0.05)) > 0.99
    assert float(espirit.eigenvalues[0][inside].quantile(0.05)) > 0.95
    # The object fits the field of view: no second set is needed.
    assert not needs_second_set(espirit.eigenvalues)
    with pytest.raises(ValueError, match="too small"):
        espirit_maps(kspace, dataclasses.replace(region, ky_start=30, ky_stop=36), map_sets=1)


def _two_set_problem(device: torch.device) -> tuple[JointDataTerm, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    shape = (7, 9)
    mask = torch.rand(shape, generator=generator) > 0.4
    kspace = random_complex((3, *shape), generator, "cpu") * mask
    extra = random_complex((1, 3, *shape), generator, "cpu")
    image = random_complex((2, 2, *shape), generator, "cpu")
    coils = random_complex((2, 3, *shape), generator, "cpu")
    term = JointDataTerm(kspace=kspace.to(device), mask=mask.to(device), extra_maps=extra.to(device))
    return term, image.to(device), coils.to(device)


def test_two_set_data_term_matches_the_operator_sum(device: torch.device) -> None:
    term, image, coils = _two_set_problem(device)
    assert term.extra_maps is not None
    for index in range(image.shape[0]):
        first = multicoil_forward_operator(normalised_coils(coils[index]), term.mask)
        second = multicoil_forward_operator(term.extra_maps[0], term.mask)
        residual = first(image[index, 0]) + second(image[index, 1]) - term.kspace
        expected = 0.5 * residual.abs().pow(2).sum()
        torch.testing.assert_close(term.value(image, coils)[index], expected, rtol=1e-5, atol=1e-5)


def test_two_set_gradients_match_autograd(device: torch.device) -> None:
    term, image, coils = _two_set_problem(device)
    weight = torch.tensor([2.0, 0.5], device=device)
    image_leaf = image.clone().requires_grad_(True)
    coils_leaf = coils.clone().requires_grad_(True)
    term.value(image_leaf, coils_leaf, weight).sum().backward()
    assert image_leaf.grad is not None and coils_leaf.grad is not None
    torch.testing.assert_close(term.grad_image(image, coils, weight), image_leaf.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(term.grad_coils(image, coils, weight), coils_leaf.grad, rtol=1e-4, atol=1e-5)


def test_map_set_prior_score_is_the_gradient_of_its_energy() -> None:
    prior = MapSetPrior(SmoothTVPrior())
    image = torch.rand(2, 2, 12, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaf = image.clone().requires_grad_(True)
    prior.energy(leaf, 0.05).sum().backward()
    assert leaf.grad is not None
    torch.testing.assert_close(prior.score(image, 0.05), -leaf.grad)


def _folded(height: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coil images of a phantom ``SIZE`` rows tall seen with a ``height``-row field of view
    (rows beyond it fold over), and the RSS of what lands on each pixel."""
    full = _coil_images()
    start = (SIZE - height) // 2
    folded = torch.zeros((COILS, height, SIZE), dtype=torch.complex64)
    power = torch.zeros((height, SIZE))
    for row in range(SIZE):
        folded[:, (row - start) % height] += full[:, row]
        power[(row - start) % height] += full[:, row].abs().pow(2).sum(0)
    return folded, power.sqrt()


def test_two_map_sets_beat_one_for_an_object_wider_than_the_field_of_view() -> None:
    height = 48
    folded, reference = _folded(height)
    mask = equispaced_lines_mask((height, SIZE), 2, 16)
    data = KSpaceSlice(kspace=(FFT2Operator().forward(folded) * mask).to(torch.complex64), mask=mask)
    region = calibration_region(mask)
    assert region is not None
    eigenvalues = espirit_maps(data.kspace, region, map_sets=2).eigenvalues
    assert needs_second_set(eigenvalues), second_set_fraction(eigenvalues)
    base = ReconConfig(method="map", device="cpu", map_iterations=40, map_sigma=0.01)
    errors = {}
    for sets in (1, 0):
        result = reconstruct(data, dataclasses.replace(base, map_sets=sets), SmoothTVPrior())
        assert result.info["map_sets"] == (1 if sets == 1 else 2)
        errors[sets] = nmse(result.image, reference)
    assert errors[0] < 0.5 * errors[1], errors
    assert errors[0] < 0.025, errors  # measured 0.0126 (one set: 0.085)


def test_calibration_free_masks_keep_the_low_pass_start() -> None:
    mask = random_lines_mask((SIZE, SIZE), 4.0, 0.04, seed=0)  # a 3-line centre: no ESPIRiT block
    data = KSpaceSlice(kspace=(FFT2Operator().forward(_coil_images()) * mask).to(torch.complex64), mask=mask)
    config = ReconConfig(method="map", device="cpu", map_iterations=2)
    result = reconstruct(data, config, SmoothTVPrior())
    assert result.info["coil_start"] == "lowpass" and result.info["map_sets"] == 1
    with pytest.raises(ValueError, match="calibration block"):
        reconstruct(data, dataclasses.replace(config, map_sets=2), SmoothTVPrior())


def test_the_final_prior_level_follows_the_noise() -> None:
    fast = load_preset("fast")
    assert fast.map_sigma == 0.0
    assert final_map_sigma(fast, 0.001) == pytest.approx(0.0015)
    assert final_map_sigma(fast, 0.02) == pytest.approx(0.03)
    assert final_map_sigma(fast, 1e-6) > 0.0
    assert final_map_sigma(fast, 10.0) == fast.map_sigma_start
    assert final_map_sigma(dataclasses.replace(fast, map_sigma=0.004), 0.02) == 0.004
    with pytest.raises(ValueError, match="map_sigma"):
        dataclasses.replace(fast, map_sigma=float("nan"))
    with pytest.raises(ValueError, match="coil_smoothness"):
        dataclasses.replace(fast, coil_smoothness=float("nan"))
    with pytest.raises(ValueError, match="map_sets"):
        dataclasses.replace(fast, map_sets=3)
    with pytest.raises(ValueError, match="explicit sigma_max"):
        dataclasses.replace(fast, method="posterior", initialisation="zero_filled")
