"""Readout and grid handling between raw lines and the reconstruction grid."""

from __future__ import annotations

import pytest
import torch
from operator_checks import random_complex

from gadgets.readout import (
    centre_readout,
    crop_or_pad,
    display_window,
    fit_to_recon_grid,
    imaging_noise_scale,
    kz_to_partitions,
    place_lines,
    readout_support,
    remove_readout_oversampling,
)


def _centred_fft(x: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(x, dim=-1), dim=-1, norm="ortho"), dim=-1)


def test_oversampling_removal_keeps_an_object_inside_the_recon_fov() -> None:
    generator = torch.Generator().manual_seed(0)
    samples, kept = 128, 64
    inside = random_complex((3, kept), generator, "cpu")
    image = crop_or_pad(inside, samples, dim=-1)  # object only in the central half of the FOV
    lines = _centred_fft(image)
    removed = remove_readout_oversampling(lines, kept)
    assert removed.shape == (3, kept)
    assert torch.allclose(removed, _centred_fft(inside), atol=1e-5)
    # The k-space centre stays the centre: the DC sample scales by sqrt(N / M) only.
    dc = lines[:, samples // 2] * (samples / kept) ** 0.5
    assert torch.allclose(removed[:, kept // 2], dc, atol=1e-5)


def test_oversampling_removal_keeps_white_noise_variance() -> None:
    noise = random_complex((64, 256), torch.Generator().manual_seed(1), "cpu") / 2**0.5
    assert abs(float(noise.abs().pow(2).mean()) - 1.0) < 0.02
    removed = remove_readout_oversampling(noise, 128)
    assert abs(float(removed.abs().pow(2).mean()) - 1.0) < 0.03


def test_oversampling_removal_rejects_growth_and_passes_equal_size() -> None:
    lines = torch.ones(2, 8, dtype=torch.complex64)
    assert remove_readout_oversampling(lines, 8) is lines
    with pytest.raises(ValueError, match="cannot remove oversampling"):
        remove_readout_oversampling(lines, 16)


def test_centre_readout_places_an_asymmetric_echo() -> None:
    samples = torch.arange(96, dtype=torch.float32).to(torch.complex64)[None]
    line, acquired = centre_readout(samples, centre_sample=32, length=128)
    assert line.shape == (1, 128)
    assert acquired == (32, 128)
    assert line[0, 64] == samples[0, 32]
    assert bool((line[0, :32] == 0).all())
    full, full_range = centre_readout(samples, centre_sample=48, length=96)
    assert full is samples and full_range == (0, 96)
    with pytest.raises(ValueError, match="does not fit"):
        centre_readout(samples, centre_sample=10, length=128)


def test_readout_support_maps_the_acquired_range() -> None:
    assert bool(readout_support((0, 128), 128, 64).all())
    support = readout_support((32, 128), 128, 64)
    assert support.shape == (64,)
    assert int((~support).sum()) == 16  # the missing quarter of the line, at half the sampling
    assert bool(support[32:].all())


def test_place_lines_averages_duplicates_and_marks_rows() -> None:
    lines = torch.stack(
        [torch.full((2, 4), value, dtype=torch.complex64) for value in (1.0, 3.0, 5.0)]
    )  # (L=3, C=2, X=4)
    kspace, acquired = place_lines(lines, [1, 4, 1], grid_rows=6)
    assert kspace.shape == (2, 6, 4)
    assert kspace.dtype == torch.complex64
    assert acquired.tolist() == [False, True, False, False, True, False]
    assert torch.allclose(kspace[:, 1], torch.full((2, 4), 3.0, dtype=torch.complex64))  # (1 + 5) / 2
    assert torch.allclose(kspace[:, 4], torch.full((2, 4), 3.0, dtype=torch.complex64))
    assert bool((kspace[:, 0] == 0).all())


def test_place_lines_rejects_rows_outside_the_grid() -> None:
    lines = torch.zeros(2, 1, 4, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"rows \[7\] fall outside the 6-row grid"):
        place_lines(lines, [0, 7], grid_rows=6)
    with pytest.raises(ValueError, match="2 lines"):
        place_lines(lines, [0], grid_rows=6)


def test_fit_to_recon_grid_crops_the_phase_fov() -> None:
    image = torch.zeros(160, 64)
    image[8:152] = 1.0
    image[80, 32] = 7.0  # the centre pixel stays the centre pixel
    fitted = fit_to_recon_grid(image, (1.5, 2.0), recon_matrix=(144, 64), recon_fov_mm=(216.0, 128.0))
    assert fitted.shape == (144, 64)
    assert bool((fitted == torch.cat([image[8:80], image[80:152]])).all())
    assert float(fitted[72, 32]) == 7.0


def test_fit_to_recon_grid_resamples_a_different_pixel_size() -> None:
    image = torch.full((2, 48, 40), 3.0)
    fitted = fit_to_recon_grid(image, (2.0, 2.0), recon_matrix=(96, 80), recon_fov_mm=(96.0, 80.0))
    assert fitted.shape == (2, 96, 80)
    assert torch.allclose(fitted, torch.full_like(fitted, 3.0), atol=1e-4)
    unknown = fit_to_recon_grid(image, (0.0, 0.0), recon_matrix=(48, 40), recon_fov_mm=(0.0, 0.0))
    assert unknown is image


def test_display_window_spans_the_quantiles() -> None:
    image = torch.linspace(0.0, 100.0, 9999).reshape(101, 99)
    centre, width = display_window(image)
    assert centre == pytest.approx(50.0, abs=0.1)
    assert width == pytest.approx(98.0, abs=0.1)
    assert display_window(torch.zeros(4, 4))[1] > 0.0


def test_imaging_noise_scale_follows_dwell_time_and_bandwidth() -> None:
    assert imaging_noise_scale(20.0, 2.5) == pytest.approx(8.0)
    assert imaging_noise_scale(5.0, 5.0, 0.8, oversampling_removed=True) == pytest.approx(1.25)
    assert imaging_noise_scale(5.0, 5.0, 0.8, oversampling_removed=False) == pytest.approx(1.0)
    assert imaging_noise_scale(0.0, 5.0) == 1.0


def test_kz_to_partitions_is_the_inverse_fft_along_kz_and_keeps_white_noise() -> None:
    generator = torch.Generator().manual_seed(2)
    volume = random_complex((3, 4, 5, 6), generator, "cpu")  # (C, z, y, x)
    kspace = torch.fft.fftshift(torch.fft.fft(torch.fft.ifftshift(volume, dim=1), dim=1, norm="ortho"), dim=1)
    assert torch.allclose(kz_to_partitions(kspace, 4, dim=1), volume, atol=1e-5)
    # Twice the partitions (half the thickness): every other one is an encoded partition.
    assert torch.allclose(kz_to_partitions(kspace, 8, dim=1)[:, ::2], volume, atol=1e-5)
    noise = random_complex((64, 16, 128), generator, "cpu") / 2**0.5
    for partitions in (16, 32, 12):
        hybrid = kz_to_partitions(noise, partitions, dim=1)
        assert hybrid.shape == (64, partitions, 128)
        assert abs(float(hybrid.abs().pow(2).mean()) - 1.0) < 0.03
