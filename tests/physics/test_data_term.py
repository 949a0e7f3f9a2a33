"""The joint data term: value and gradients against autograd, and the noise estimate."""

from __future__ import annotations

import pytest
import torch
from operator_checks import assert_adjoint, random_complex

from recon_core.physics.data_term import JointDataTerm, coil_rss, normalise_coil_scale, normalised_coils
from recon_core.physics.noise_estimation import estimate_noise_std
from recon_core.physics.operators import multicoil_forward_operator, samples_whole_readouts


def _problem(
    shape: tuple[int, int], device: torch.device, whole_readouts: bool = False
) -> tuple[JointDataTerm, torch.Tensor, torch.Tensor]:
    """A random problem; ``whole_readouts``: a 1D line mask (the row-FFT path of the data term),
    else a random 2D mask (the 2D-FFT path)."""
    generator = torch.Generator().manual_seed(0)
    batch, coils = 2, 3
    mask = torch.rand(shape, generator=generator) > 0.4
    if whole_readouts:
        mask = (torch.rand(shape[0], generator=generator) > 0.4)[:, None].expand(shape).clone()
    assert samples_whole_readouts(mask) == whole_readouts
    kspace = random_complex((coils, *shape), generator, "cpu") * mask
    image = torch.rand((batch, *shape), generator=generator)
    maps = random_complex((batch, coils, *shape), generator, "cpu")
    data_term = JointDataTerm(kspace=kspace.to(device), mask=mask.to(device))
    return data_term, image.to(device), maps.to(device)


@pytest.mark.parametrize("whole_readouts", [False, True])
@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_value_matches_the_operator_model(
    shape: tuple[int, int], whole_readouts: bool, device: torch.device
) -> None:
    data_term, image, coils = _problem(shape, device, whole_readouts)
    expected = []
    for index in range(image.shape[0]):
        operator = multicoil_forward_operator(normalised_coils(coils[index]), data_term.mask)
        residual = operator(image[index].to(torch.complex64)) - data_term.kspace
        expected.append(0.5 * 3.0 * residual.abs().pow(2).sum())
    torch.testing.assert_close(
        data_term.value(image, coils, 3.0), torch.stack(expected), rtol=1e-5, atol=1e-6
    )
    back = data_term.back_projection(data_term.residual(image, coils))
    operator = multicoil_forward_operator(normalised_coils(coils), data_term.mask)
    direct = operator.H.forward(operator(image.to(torch.complex64)) - data_term.kspace)
    torch.testing.assert_close((normalised_coils(coils).conj() * back).sum(dim=-3), direct)


@pytest.mark.parametrize("whole_readouts", [False, True])
@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_gradients_match_autograd(shape: tuple[int, int], whole_readouts: bool, device: torch.device) -> None:
    data_term, image, coils = _problem(shape, device, whole_readouts)
    weight = torch.tensor([2.0, 0.5], device=device)
    image_leaf = image.clone().requires_grad_(True)
    coils_leaf = coils.clone().requires_grad_(True)
    data_term.value(image_leaf, coils_leaf, weight).sum().backward()
    assert image_leaf.grad is not None and coils_leaf.grad is not None
    torch.testing.assert_close(
        data_term.grad_image(image, coils, weight), image_leaf.grad, rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        data_term.grad_coils(image, coils, weight), coils_leaf.grad, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("whole_readouts", [False, True])
@pytest.mark.parametrize("complex_image", [False, True])
def test_normal_operator_is_the_hessian_and_self_adjoint(
    whole_readouts: bool, complex_image: bool, device: torch.device
) -> None:
    """``normal(u) = A^H A u``: the image gradient of the data term without data, and
    ``<v, A^H A u> = <A v, A u>`` (the dot-product test)."""
    data_term, image, coils = _problem((8, 10), device, whole_readouts)
    generator = torch.Generator().manual_seed(5)
    other = torch.rand(image.shape, generator=generator).to(device)
    if complex_image:
        image = image + 1j * torch.rand(image.shape, generator=generator).to(device)
        other = other - 0.5j * torch.rand(image.shape, generator=generator).to(device)
    maps = normalised_coils(coils)
    silent = JointDataTerm(kspace=torch.zeros_like(data_term.kspace), mask=data_term.mask)
    normal = data_term.normal(image, maps)
    assert normal.shape == image.shape and normal.dtype == image.dtype
    torch.testing.assert_close(normal, silent.grad_image(image, coils, 1.0, maps=maps))
    forward_u = silent.residual(image, coils, maps)
    forward_v = silent.residual(other, coils, maps)
    left = (other.conj() * normal).real.sum() if complex_image else (other * normal).sum()
    torch.testing.assert_close(left, (forward_v.conj() * forward_u).real.sum(), rtol=1e-5, atol=1e-5)


def test_coil_scale_invariance(device: torch.device) -> None:
    data_term, image, coils = _problem((6, 6), device)
    rescaled = normalise_coil_scale(coils)
    torch.testing.assert_close(data_term.value(image, rescaled), data_term.value(image, coils))
    rms = coil_rss(rescaled).pow(2).mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-4, atol=1e-4)
    assert bool((normalised_coils(coils).abs().pow(2).sum(-3) - 1.0).abs().max() < 1e-4)


def test_bad_data_term_inputs() -> None:
    with pytest.raises(ValueError, match="complex"):
        JointDataTerm(kspace=torch.zeros(2, 4, 4), mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        JointDataTerm(
            kspace=torch.zeros(2, 4, 4, dtype=torch.complex64), mask=torch.ones(4, 5, dtype=torch.bool)
        )


@pytest.mark.parametrize("coils", [1, 8])
def test_noise_estimate_on_pure_noise(coils: int) -> None:
    generator = torch.Generator().manual_seed(7)
    sigma = 0.3
    noise = sigma * random_complex((coils, 96, 96), generator, "cpu")  # unit variance per real part
    mask = torch.rand((96, 96), generator=generator) > 0.5
    estimate = estimate_noise_std(noise * mask, mask)
    assert estimate == pytest.approx(sigma, rel=0.1)


def test_noise_estimate_rejects_noise_free_data() -> None:
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[8, 8] = True
    kspace = torch.zeros(4, 16, 16, dtype=torch.complex64)
    with pytest.raises(ValueError, match="noise"):
        estimate_noise_std(kspace, mask)


@pytest.mark.parametrize("whole_readouts", [False, True])
@pytest.mark.parametrize("shape", [(8, 10), (7, 9)])
def test_gradients_match_autograd_for_a_complex_image(
    shape: tuple[int, int], whole_readouts: bool, device: torch.device
) -> None:
    data_term, image, coils = _problem(shape, device, whole_readouts)
    generator = torch.Generator().manual_seed(5)
    complex_image = random_complex(tuple(image.shape), generator, "cpu").to(device)
    weight = torch.tensor([2.0, 0.5], device=device)
    image_leaf = complex_image.clone().requires_grad_(True)
    coils_leaf = coils.clone().requires_grad_(True)
    data_term.value(image_leaf, coils_leaf, weight).sum().backward()
    assert image_leaf.grad is not None and coils_leaf.grad is not None
    gradient = data_term.grad_image(complex_image, coils, weight)
    assert gradient.is_complex()
    torch.testing.assert_close(gradient, image_leaf.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        data_term.grad_coils(complex_image, coils, weight), coils_leaf.grad, rtol=1e-4, atol=1e-5
    )


def _assert_linear_model_adjoint(
    data_term: JointDataTerm, image: torch.Tensor, coils: torch.Tensor, device: torch.device
) -> None:
    """The per-entry linear model ``v -> M_b F S_b v`` and its adjoint pass the dot-product test."""
    maps = normalised_coils(coils)
    complex_image = image.to(torch.complex64)
    assert_adjoint(
        lambda v: data_term.residual(v, coils, maps) + data_term.measured_unshifted,
        lambda r: data_term.grad_image(complex_image, coils, 1.0, residual=r, maps=maps),
        tuple(image.shape),
        (image.shape[0], coils.shape[1], *image.shape[1:]),
        device,
    )


@pytest.mark.parametrize("whole_readouts", [False, True])
def test_per_entry_masks(whole_readouts: bool, device: torch.device) -> None:
    """A ``(B, H, W)`` mask (the jackknife's replicates) acts like one data term per entry, its
    gradients match autograd and its linear model ``v -> M_b F S_b v`` passes the adjoint test."""
    data_term, image, coils = _problem((8, 10), device, whole_readouts)
    generator = torch.Generator().manual_seed(5)
    if whole_readouts:
        keep = torch.rand((2, 8), generator=generator) > 0.3
        masks = data_term.mask.cpu() & keep[:, :, None]
    else:
        masks = data_term.mask.cpu() & (torch.rand((2, 8, 10), generator=generator) > 0.3)
    masks = masks.to(device)
    batched = JointDataTerm(kspace=data_term.kspace, mask=masks)
    assert batched.measured_unshifted.shape == (2, 3, 8, 10)
    single = [JointDataTerm(kspace=data_term.kspace * masks[b], mask=masks[b]) for b in range(2)]
    expected = torch.cat([single[b].value(image[b : b + 1], coils[b : b + 1], 2.0) for b in range(2)])
    torch.testing.assert_close(batched.value(image, coils, 2.0), expected, rtol=1e-5, atol=1e-6)
    image_leaf = image.clone().requires_grad_(True)
    batched.value(image_leaf, coils, 2.0).sum().backward()
    assert image_leaf.grad is not None
    torch.testing.assert_close(batched.grad_image(image, coils, 2.0), image_leaf.grad, rtol=1e-4, atol=1e-5)
    _assert_linear_model_adjoint(batched, image, coils, device)
    with pytest.raises(ValueError, match="mask must be bool"):
        JointDataTerm(kspace=data_term.kspace, mask=masks[:, None])


@pytest.mark.parametrize("whole_readouts", [False, True])
def test_per_entry_data(whole_readouts: bool, device: torch.device) -> None:
    """``(B, C, H, W)`` data with ``(B, H, W)`` masks (slices solved in one batch) act like one
    data term per entry: values and gradients match, and the linear model passes the adjoint test."""
    first, image, coils = _problem((8, 10), device, whole_readouts)
    generator = torch.Generator().manual_seed(7)
    second_mask = torch.roll(first.mask.cpu(), 1, 0)
    second_kspace = random_complex((3, 8, 10), generator, "cpu") * second_mask
    second = JointDataTerm(kspace=second_kspace.to(device), mask=second_mask.to(device))
    single = [first, second]
    batched = JointDataTerm(
        kspace=torch.stack([term.kspace for term in single]), mask=torch.stack([term.mask for term in single])
    )
    weights = torch.tensor([2.0, 0.5], device=device)
    expected = torch.cat(
        [single[b].value(image[b : b + 1], coils[b : b + 1], float(weights[b])) for b in range(2)]
    )
    torch.testing.assert_close(batched.value(image, coils, weights), expected, rtol=1e-5, atol=1e-6)
    for b in range(2):
        torch.testing.assert_close(
            batched.grad_image(image, coils, weights)[b : b + 1],
            single[b].grad_image(image[b : b + 1], coils[b : b + 1], float(weights[b])),
            rtol=1e-4,
            atol=1e-5,
        )
        torch.testing.assert_close(
            batched.grad_coils(image, coils, weights)[b : b + 1],
            single[b].grad_coils(image[b : b + 1], coils[b : b + 1], float(weights[b])),
            rtol=1e-4,
            atol=1e-5,
        )
    _assert_linear_model_adjoint(batched, image, coils, device)
    with pytest.raises(ValueError, match="same batch size"):
        JointDataTerm(kspace=batched.kspace, mask=torch.stack([first.mask] * 3))
