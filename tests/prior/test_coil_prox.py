"""The coil smoothness prior: the DCT, its adjoint, and the exactness of the proximal map."""

from __future__ import annotations

import pytest
import torch
from operator_checks import assert_adjoint, random_complex
from scipy import fft as scipy_fft

from recon_core.prior.coil_prior import (
    DCT2Operator,
    dct2,
    finite_differences,
    idct2,
    laplacian_eigenvalues,
    smoothness_energy,
    smoothness_prox,
)


@pytest.mark.parametrize("shape", [(5, 7), (6, 8), (9, 4)])
def test_dct_matches_scipy_and_inverts(shape: tuple[int, int], device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((3, *shape), generator=generator, dtype=torch.float64)
    expected = scipy_fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    coefficients = dct2(x.to(device))
    torch.testing.assert_close(coefficients.cpu(), torch.from_numpy(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(idct2(coefficients).cpu(), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (6, 8), (9, 4)])
def test_complex_dct_is_the_dct_of_each_part(shape: tuple[int, int], device: torch.device) -> None:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn((2, 3, *shape), generator=generator, dtype=torch.complex128)
    expected = scipy_fft.dctn(x.real.numpy(), axes=(-2, -1), norm="ortho") + 1j * scipy_fft.dctn(
        x.imag.numpy(), axes=(-2, -1), norm="ortho"
    )
    coefficients = dct2(x.to(device))
    torch.testing.assert_close(coefficients.cpu(), torch.from_numpy(expected), rtol=0, atol=1e-12)
    torch.testing.assert_close(idct2(coefficients).cpu(), x, rtol=0, atol=1e-12)
    single = dct2(x.to(device, torch.complex64))
    assert single.dtype == torch.complex64
    torch.testing.assert_close(single.cpu(), coefficients.cpu().to(torch.complex64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(5, 7), (8, 6)])
def test_dct_operator_adjoint(shape: tuple[int, int], device: torch.device) -> None:
    operator = DCT2Operator()
    full_shape = (2, *shape)
    assert_adjoint(operator.forward, operator.adjoint, full_shape, full_shape, device=device)
    assert_adjoint(operator.H.forward, operator.H.adjoint, full_shape, full_shape, device=device)


def _dense_gradient(height: int, width: int) -> torch.Tensor:
    """``(2 H W, H W)`` matrix of the forward differences with Neumann boundary."""
    eye = torch.eye(height * width, dtype=torch.float64).reshape(height * width, height, width)
    along_h, along_w = finite_differences(eye)
    return torch.cat([along_h.reshape(height * width, -1).T, along_w.reshape(height * width, -1).T])


@pytest.mark.parametrize("weight", [0.3, 5.0])
def test_prox_is_exact_against_dense_solve(weight: float, device: torch.device) -> None:
    height, width = 5, 6
    generator = torch.Generator().manual_seed(1)
    coils = random_complex((3, height, width), generator, "cpu").to(torch.complex128)
    gradient = _dense_gradient(height, width)
    system = torch.eye(height * width, dtype=torch.float64) + weight * gradient.T @ gradient
    expected = torch.linalg.solve(system.to(torch.complex128), coils.reshape(3, -1).T).T.reshape(coils.shape)
    result = smoothness_prox(coils.to(device), weight).cpu()
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-10)


def test_prox_per_chain_weights(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(2)
    coils = random_complex((2, 3, 6, 5), generator, device)
    weights = torch.tensor([0.5, 4.0], device=device).reshape(2, 1, 1, 1)
    batched = smoothness_prox(coils, weights)
    for index, weight in enumerate((0.5, 4.0)):
        torch.testing.assert_close(batched[index], smoothness_prox(coils[index], weight))


def test_laplacian_eigenvalues_diagonalise_the_energy(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(3)
    coils = random_complex((4, 7, 9), generator, device).to(torch.complex128)
    eigenvalues = laplacian_eigenvalues(7, 9, device).to(torch.float64)
    in_dct_domain = 0.5 * 2.0 * (eigenvalues * dct2(coils).abs() ** 2).sum()
    torch.testing.assert_close(smoothness_energy(coils, 2.0), in_dct_domain)
    assert float(eigenvalues[0, 0]) == 0.0  # the constant map is not penalised


def test_prox_solves_its_minimisation(device: torch.device) -> None:
    """The prox output has a zero gradient of 1/2 ||z - c||^2 + t E(z) (E with mu = 1)."""
    generator = torch.Generator().manual_seed(4)
    coils = random_complex((2, 6, 7), generator, device).to(torch.complex128)
    weight = 2.5
    z = smoothness_prox(coils, weight).detach().requires_grad_(True)
    objective = 0.5 * (z - coils).abs().pow(2).sum() + weight * smoothness_energy(z, 1.0)
    objective.backward()
    assert z.grad is not None
    assert float(z.grad.abs().max()) < 1e-10


@pytest.mark.parametrize("order", [1, 2])
def test_anchored_prox_solves_its_minimisation(order: int, device: torch.device) -> None:
    """With an anchor ``a`` the prox minimises 1/2 ||z - c||^2 + t E(z - a): its gradient there
    is zero, the anchor itself is a fixed point, and a smooth deviation is kept while the
    anchor's own rough detail is not smoothed away."""
    generator = torch.Generator().manual_seed(6)
    coils = random_complex((2, 6, 7), generator, device).to(torch.complex128)
    anchor = random_complex((2, 6, 7), generator, device).to(torch.complex128)
    weight = 2.5
    z = smoothness_prox(coils, weight, order, anchor).detach().requires_grad_(True)
    objective = 0.5 * (z - coils).abs().pow(2).sum() + weight * smoothness_energy(z - anchor, 1.0, order)
    objective.backward()
    assert z.grad is not None
    assert float(z.grad.abs().max()) < 1e-10
    torch.testing.assert_close(smoothness_prox(anchor, 1e6, order, anchor), anchor, rtol=0, atol=1e-12)
    shifted = anchor + 0.3  # a constant deviation costs nothing under the Neumann Laplacian
    torch.testing.assert_close(smoothness_prox(shifted, 1e6, order, anchor), shifted, rtol=0, atol=1e-9)
    assert float((smoothness_prox(anchor, 1e6, order) - anchor).abs().max()) > 0.1


@pytest.mark.parametrize("order", [2, 3])
def test_higher_order_prox_is_exact_against_dense_solve(order: int, device: torch.device) -> None:
    height, width, weight = 5, 6, 0.7
    generator = torch.Generator().manual_seed(5)
    coils = random_complex((3, height, width), generator, "cpu").to(torch.complex128)
    gradient = _dense_gradient(height, width)
    laplacian = gradient.T @ gradient
    system = torch.eye(height * width, dtype=torch.float64) + weight * torch.linalg.matrix_power(
        laplacian, order
    )
    expected = torch.linalg.solve(system.to(torch.complex128), coils.reshape(3, -1).T).T.reshape(coils.shape)
    result = smoothness_prox(coils.to(device), weight, order).cpu()
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-9)
    # the energy of that order: 1/2 <c, L^p c>
    flat = coils.reshape(3, -1)
    dense_energy = (
        0.5 * 2.0 * (flat.conj() @ torch.linalg.matrix_power(laplacian, order).to(flat.dtype) @ flat.T)
    )
    torch.testing.assert_close(
        smoothness_energy(coils, 2.0, order), dense_energy.diagonal().real.sum(), rtol=1e-10, atol=1e-10
    )


def test_smoothness_order_must_be_positive() -> None:
    coils = torch.zeros((2, 4, 4), dtype=torch.complex64)
    with pytest.raises(ValueError, match="order"):
        smoothness_prox(coils, 1.0, 0)
    with pytest.raises(ValueError, match="order"):
        smoothness_energy(coils, 1.0, 0)
