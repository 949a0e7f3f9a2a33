"""Adjointness, orthonormality and composition of the physics operators."""

from __future__ import annotations

import pytest
import torch
from operator_checks import adjointness_error, assert_adjoint, random_complex

from recon_core.physics.fourier import centred_fft
from recon_core.physics.operators import (
    CartesianMaskOperator,
    CoilSensitivityOperator,
    FFT2Operator,
    IdentityOperator,
    RampedFFT2Operator,
    RampedRowFFTOperator,
    multicoil_forward_operator,
    samples_whole_readouts,
)

SHAPES = [(1, 8, 8), (4, 16, 12), (8, 31, 17)]  # (coils, H, W): even, odd, non-square


def _mask(height: int, width: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    lines = torch.rand(height, generator=generator) < 0.4
    lines[height // 2] = True
    return lines[:, None].expand(height, width).to(device)


@pytest.mark.parametrize("shape", SHAPES)
def test_fft_adjoint_and_orthonormal(shape: tuple[int, int, int], device: torch.device) -> None:
    fft = FFT2Operator()
    assert_adjoint(fft.forward, fft.adjoint, shape, shape, device)
    generator = torch.Generator().manual_seed(3)
    x = random_complex(shape, generator, device)
    # Orthonormal: energy preserved, inverse is the adjoint, gram is the identity.
    assert torch.allclose(fft(x).norm(), x.norm(), rtol=1e-5)
    assert torch.allclose(fft.H(fft(x)), x, atol=1e-5)
    assert torch.equal(fft.gram(x), x)


def test_fft_is_centred(device: torch.device) -> None:
    height, width = 9, 12
    image = torch.ones(height, width, dtype=torch.complex64, device=device)
    kspace = FFT2Operator()(image)
    peak = int(kspace.abs().flatten().argmax())
    assert divmod(peak, width) == (height // 2, width // 2)
    assert torch.allclose(kspace[height // 2, width // 2].abs(), torch.tensor((height * width) ** 0.5))


@pytest.mark.parametrize("shape", SHAPES)
def test_ramped_fft_is_the_centred_fft_up_to_its_kspace_phase(
    shape: tuple[int, int, int], device: torch.device
) -> None:
    _coils, height, width = shape
    ramped = RampedFFT2Operator(height, width, device)
    assert_adjoint(ramped.forward, ramped.adjoint, shape, shape, device)
    x = random_complex(shape, torch.Generator().manual_seed(4), device)
    centred = FFT2Operator()(x)
    assert torch.allclose(ramped.kspace_phase * ramped(x), centred, atol=1e-5)
    assert torch.allclose(ramped.H(ramped.kspace_phase.conj() * centred), x, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_row_fft_is_the_centred_fft_along_ky_up_to_its_phase(
    shape: tuple[int, int, int], device: torch.device
) -> None:
    _coils, height, _width = shape
    rows = RampedRowFFTOperator(height, device)
    assert_adjoint(rows.forward, rows.adjoint, shape, shape, device)
    x = random_complex(shape, torch.Generator().manual_seed(7), device)
    centred = centred_fft(x, -2)
    assert torch.allclose(rows.kspace_phase * rows(x), centred, atol=1e-5)
    # F = F_x F_y: the row transform of the hybrid image is the 2D centred FFT along ky.
    assert torch.allclose(centred_fft(rows.kspace_phase * rows(x), -1), FFT2Operator()(x), atol=1e-5)


def test_whole_readout_masks_are_recognised() -> None:
    lines = torch.zeros(6, 5, dtype=torch.bool)
    lines[[0, 3]] = True
    assert samples_whole_readouts(lines)
    assert samples_whole_readouts(torch.zeros(6, 5, dtype=torch.bool))
    lines[1, 2] = True  # one sample of a readout: a 2D pattern
    assert not samples_whole_readouts(lines)


@pytest.mark.parametrize("shape", SHAPES)
def test_coil_operator_adjoint_and_gram(shape: tuple[int, int, int], device: torch.device) -> None:
    _coils, height, width = shape
    maps = random_complex(shape, torch.Generator().manual_seed(5), device)
    op = CoilSensitivityOperator(maps)
    assert_adjoint(op.forward, op.adjoint, (height, width), shape, device)
    x = random_complex((height, width), torch.Generator().manual_seed(6), device)
    assert torch.allclose(op.gram(x), op.adjoint(op(x)), atol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_operator_adjoint_and_projection(shape: tuple[int, int, int], device: torch.device) -> None:
    op = CartesianMaskOperator(_mask(shape[1], shape[2], device))
    assert_adjoint(op.forward, op.adjoint, shape, shape, device)
    x = random_complex(shape, torch.Generator().manual_seed(7), device)
    assert torch.equal(op(op(x)), op(x))


@pytest.mark.parametrize("shape", SHAPES)
def test_composed_forward_operator(shape: tuple[int, int, int], device: torch.device) -> None:
    _coils, height, width = shape
    maps = random_complex(shape, torch.Generator().manual_seed(8), device)
    mask = _mask(height, width, device)
    forward_op = multicoil_forward_operator(maps, mask)
    assert_adjoint(forward_op.forward, forward_op.adjoint, (height, width), shape, device)
    assert_adjoint(forward_op.H.forward, forward_op.H.adjoint, shape, (height, width), device)
    x = random_complex((height, width), torch.Generator().manual_seed(9), device)
    # The composition equals applying the pieces by hand, and the structured gram is A^H A.
    by_hand = FFT2Operator()(maps * x) * mask
    assert torch.allclose(forward_op(x), by_hand, atol=1e-5)
    assert torch.allclose(forward_op.gram(x), forward_op.H(forward_op(x)), atol=1e-4)
    assert forward_op.H.H is forward_op


def test_batched_coil_maps(device: torch.device) -> None:
    batch, coils, height, width = 3, 4, 10, 6
    maps = random_complex((batch, coils, height, width), torch.Generator().manual_seed(10), device)
    forward_op = multicoil_forward_operator(maps, _mask(height, width, device))
    assert_adjoint(forward_op.forward, forward_op.adjoint, (batch, height, width), maps.shape, device)


def test_adjoint_helper_detects_a_wrong_adjoint() -> None:
    fft = FFT2Operator()
    error = adjointness_error(fft.forward, fft.forward, (8, 8), (8, 8))
    assert error > 1e-2
    with pytest.raises(AssertionError, match="adjoint test failed"):
        assert_adjoint(fft.forward, lambda y: 2 * fft.adjoint(y), (8, 8), (8, 8))


def test_identity_and_bad_inputs() -> None:
    x = torch.ones(2, 3, dtype=torch.complex64)
    assert torch.equal(IdentityOperator()(x), x)
    with pytest.raises(ValueError, match="coil_maps"):
        CoilSensitivityOperator(torch.ones(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="mask"):
        CartesianMaskOperator(torch.ones(4, dtype=torch.bool))


@pytest.mark.parametrize("shape", [(3, 8, 8), (2, 7, 5)])
def test_centred_fft_matches_numpy_and_is_its_own_adjoint(shape: tuple[int, ...]) -> None:
    import numpy as np

    from recon_core.physics.fourier import centred_fft, centred_ifft

    generator = torch.Generator().manual_seed(4)
    x = random_complex(shape, generator, "cpu").to(torch.complex128)
    expected = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    assert np.allclose(centred_fft(x).numpy(), expected, atol=1e-12)
    assert np.allclose(centred_fft(x.numpy()), expected, atol=1e-12)  # NumPy in, NumPy out
    assert torch.allclose(centred_ifft(centred_fft(x)), x, atol=1e-12)
    assert_adjoint(lambda u: centred_fft(u, -1), lambda k: centred_ifft(k, -1), shape, shape)
