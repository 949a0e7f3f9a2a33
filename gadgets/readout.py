"""Cartesian data handling between raw readouts and the reconstruction grid.

The small numerical steps a Gadgetron front end needs before and after the reconstruction,
kept here so that ``gadgets/`` holds no maths:

* :func:`centre_readout`: an (asymmetric-echo) readout placed on a full-length line so its
  k-space centre sample sits at ``length // 2``;
* :func:`remove_readout_oversampling`: the readout field of view cut to its central part in the
  image domain (centred, orthonormal FFTs, so white noise keeps its per-sample variance);
* :func:`readout_support`: which samples of the output line were actually acquired;
* :func:`place_lines`: phase-encode lines put on the ``(C, ky, kx)`` grid, duplicates averaged;
* :func:`kz_to_partitions`: 3D k-space to hybrid space (partitions in the image domain along z,
  ky and kx still in k-space), so that each partition is a 2D slice;
* :func:`fit_to_recon_grid`: a reconstructed image cropped / padded (and, when the pixel size
  differs, Fourier-resampled) to the header's recon matrix and field of view;
* :func:`display_window`: a window centre / width for scanner viewers.

Conventions follow :mod:`recon_core.physics.kspace`: k-space centre at index ``n // 2`` of every axis,
images ``(H, W)`` = ``(ky, kx)``, centred orthonormal FFTs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon_core.physics.fourier import centred_fft, centred_ifft


def _centre_window(size: int, target: int) -> tuple[int, int, int]:
    """``(source_start, target_start, count)`` mapping index ``size // 2`` onto ``target // 2``."""
    offset = target // 2 - size // 2
    source_start = max(0, -offset)
    target_start = max(0, offset)
    count = min(size - source_start, target - target_start)
    return source_start, target_start, count


def crop_or_pad(x: Tensor, size: int, dim: int) -> Tensor:
    """Centre crop or zero-pad ``x`` along ``dim`` to ``size``, keeping index ``n // 2`` central."""
    current = x.shape[dim]
    if current == size:
        return x
    source_start, target_start, count = _centre_window(current, size)
    shape = list(x.shape)
    shape[dim] = size
    out = torch.zeros(shape, dtype=x.dtype, device=x.device)
    out.narrow(dim, target_start, count).copy_(x.narrow(dim, source_start, count))
    return out


def centre_readout(samples: Tensor, centre_sample: int, length: int) -> tuple[Tensor, tuple[int, int]]:
    """Place a readout on a zero line of ``length`` samples with its centre at ``length // 2``.

    Args:
        samples: ``(..., N)`` complex readout (discarded samples already removed).
        centre_sample: index of the k-space centre within ``samples`` (ISMRMRD ``center_sample``).
        length: full line length (the encoded matrix x, or the buffer's readout size).

    Returns:
        The ``(..., length)`` line and the ``(start, stop)`` range of acquired samples in it.

    Raises:
        ValueError: if the readout does not fit on the line.
    """
    count = samples.shape[-1]
    start = length // 2 - centre_sample
    if start < 0 or start + count > length:
        raise ValueError(
            f"readout of {count} samples with centre sample {centre_sample} does not fit a line of "
            f"{length} samples centred at {length // 2}"
        )
    if start == 0 and count == length:
        return samples, (0, length)
    line = torch.zeros((*samples.shape[:-1], length), dtype=samples.dtype, device=samples.device)
    line[..., start : start + count] = samples
    return line, (start, start + count)


def remove_readout_oversampling(lines: Tensor, output_samples: int) -> Tensor:
    """Cut the readout field of view to its central ``output_samples`` pixels.

    Centred orthonormal inverse FFT along the last axis, centre crop, centred orthonormal FFT.
    The k-space samples are scaled by ``sqrt(N / M)`` relative to plain decimation, which keeps
    the per-sample variance of white noise unchanged (whitened data stay whitened).

    Args:
        lines: ``(..., N)`` complex readouts with the k-space centre at ``N // 2``.
        output_samples: M <= N, the recon matrix x.

    Returns:
        ``(..., M)`` complex readouts with the centre at ``M // 2``.
    """
    samples = lines.shape[-1]
    if output_samples > samples:
        raise ValueError(f"cannot remove oversampling from {samples} to {output_samples} samples")
    if output_samples == samples:
        return lines
    image = centred_ifft(lines, -1)
    return centred_fft(crop_or_pad(image, output_samples, dim=-1), -1)


def readout_support(acquired: tuple[int, int], input_samples: int, output_samples: int) -> Tensor:
    """Which of ``output_samples`` k-space samples lie inside the acquired range after decimation.

    Args:
        acquired: ``(start, stop)`` of the acquired samples on the input line.
        input_samples: N, the input line length (centre at ``N // 2``).
        output_samples: M, the line length after :func:`remove_readout_oversampling`.

    Returns:
        ``(M,)`` bool; all ``True`` for a full readout.
    """
    start, stop = acquired
    if start <= 0 and stop >= input_samples:
        return torch.ones(output_samples, dtype=torch.bool)
    ratio = input_samples / output_samples
    positions = (torch.arange(output_samples, dtype=torch.float64) - output_samples // 2) * ratio
    positions = positions + input_samples // 2
    return (positions >= start) & (positions <= stop - 1)


def place_lines(lines: Tensor, rows: list[int], grid_rows: int) -> tuple[Tensor, Tensor]:
    """Put phase-encode lines on a ``(C, grid_rows, X)`` grid; lines hitting one row are averaged.

    Args:
        lines: ``(L, C, X)`` complex readouts.
        rows: L grid row indices (already shifted so that the k-space centre is ``grid_rows // 2``).
        grid_rows: ky size of the grid.

    Returns:
        ``kspace`` ``(C, grid_rows, X)`` complex64 (zeros where no line landed) and ``acquired``
        ``(grid_rows,)`` bool.

    Raises:
        ValueError: if a row lies outside the grid or ``rows`` does not match ``lines``.
    """
    if lines.ndim != 3:
        raise ValueError(f"lines must be (lines, coils, samples), got shape {tuple(lines.shape)}")
    if len(rows) != lines.shape[0]:
        raise ValueError(f"{len(rows)} row indices for {lines.shape[0]} lines")
    bad = [row for row in rows if not 0 <= row < grid_rows]
    if bad:
        raise ValueError(
            f"phase-encode lines at grid rows {sorted(set(bad))[:8]} fall outside the {grid_rows}-row "
            "grid (encoding limits or matrix size in the header do not match the data)"
        )
    index = torch.as_tensor(rows, dtype=torch.long, device=lines.device)
    coils, samples = lines.shape[1], lines.shape[2]
    total = torch.zeros((grid_rows, coils, samples), dtype=torch.complex128, device=lines.device)
    total.index_add_(0, index, lines.to(torch.complex128))
    counts = torch.zeros(grid_rows, dtype=torch.float64, device=lines.device)
    counts.index_add_(0, index, torch.ones(len(rows), dtype=torch.float64, device=lines.device))
    acquired = counts > 0
    total[acquired] /= counts[acquired].to(torch.complex128)[:, None, None]
    return total.permute(1, 0, 2).contiguous().to(torch.complex64), acquired


def kz_to_partitions(kspace: Tensor, partitions: int, dim: int = -3) -> Tensor:
    """Centred orthonormal inverse FFT along the kz axis ``dim``: 3D k-space -> hybrid space.

    The kz axis (centre at ``nz // 2``) is first zero-padded or cropped to ``partitions``
    planes around its centre, so the output holds ``partitions`` partitions at the spacing
    ``FOV_z / partitions``; partition ``partitions // 2`` lies at the slab centre (the k-space
    phase reference) and partition ``p`` at ``(p - partitions // 2)`` spacings along the slice
    direction. Zero-padding is scaled by ``sqrt(partitions / nz)`` so that white noise on fully
    sampled kz keeps its per-sample variance (prewhitened data stay whitened).

    Args:
        kspace: complex k-space with kz along ``dim``, e.g. ``(C, kz, ky, kx)``.
        partitions: number of output partitions.
        dim: the kz axis.

    Returns:
        The same shape with ``partitions`` along ``dim``, complex.
    """
    planes = kspace.shape[dim]
    resized = crop_or_pad(kspace, partitions, dim=dim)
    hybrid = centred_ifft(resized, dim)
    return hybrid * (partitions / planes) ** 0.5 if partitions > planes else hybrid


def _fourier_resample(image: Tensor, size: int, dim: int) -> Tensor:
    """Band-limited interpolation of a real image along ``dim`` (zero-pad / truncate its spectrum)."""
    spectrum = centred_fft(image.to(torch.complex64), dim)
    scale = (size / image.shape[dim]) ** 0.5
    resampled = centred_ifft(crop_or_pad(spectrum, size, dim=dim), dim).real * scale
    return resampled.clamp(min=0.0).to(image.dtype)


def fit_to_recon_grid(
    image: Tensor,
    pixel_spacing_mm: tuple[float, float],
    recon_matrix: tuple[int, int],
    recon_fov_mm: tuple[float, float],
) -> Tensor:
    """Bring a reconstructed ``(..., H, W)`` image onto the header's recon grid.

    Each axis is centre-cropped / zero-padded to cover ``recon_fov_mm`` at the current pixel
    spacing (for example the phase field of view when the encoded matrix y exceeds the recon
    matrix y); if that pixel count still differs from ``recon_matrix`` (the recon pixel size is not
    the encoded one) the axis is Fourier-resampled to it and clamped at zero.

    Args:
        image: ``(..., H, W)`` real image (magnitude or std).
        pixel_spacing_mm: ``(dy, dx)`` of ``image`` in mm; non-positive means unknown.
        recon_matrix: ``(H', W')`` = (recon matrix y, recon matrix x).
        recon_fov_mm: ``(fy, fx)`` recon field of view; non-positive means unknown.

    Returns:
        ``(..., H', W')`` image.
    """
    out = image
    axes = zip(pixel_spacing_mm, recon_matrix, recon_fov_mm, strict=True)
    for axis, (spacing, size, fov) in enumerate(axes):
        dim = image.ndim - 2 + axis
        covering = max(1, round(fov / spacing)) if spacing > 0.0 and fov > 0.0 else size
        out = crop_or_pad(out, covering, dim=dim)
        if covering != size:
            out = _fourier_resample(out, size, dim=dim)
    return out


def display_window(image: Tensor, low: float = 0.01, high: float = 0.99) -> tuple[float, float]:
    """``(centre, width)`` spanning the ``low``..``high`` quantiles of a real image (width >= tiny)."""
    values = image.detach().flatten().to(torch.float64)
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        return 0.0, 1.0
    if values.numel() > 1_000_000:
        values = values[:: values.numel() // 1_000_000 + 1]
    bottom = float(torch.quantile(values, low))
    top = float(torch.quantile(values, high))
    width = max(top - bottom, 1e-12 * max(abs(top), 1.0))
    return 0.5 * (top + bottom), width


def imaging_noise_scale(
    noise_dwell_us: float,
    acquisition_dwell_us: float,
    relative_noise_bandwidth: float = 1.0,
    oversampling_removed: bool = False,
) -> float:
    """Factor from the noise-scan covariance to the noise covariance of imaging samples.

    White receiver noise has a variance proportional to the sampling bandwidth ``1 / dwell``,
    so a noise scan sampled with a longer dwell time sees less noise per sample than the
    imaging readouts: the factor is ``noise_dwell / acquisition_dwell``. The noise scan averages
    the receiver filter's roll-off over its whole band (its equivalent noise bandwidth is
    ``relative_noise_bandwidth`` of the sampling bandwidth); once the readout oversampling is
    removed only the flat centre of the band is left, whose noise is higher by
    ``1 / relative_noise_bandwidth``. Unknown (non-positive) dwell times count as equal.
    """
    ratio = noise_dwell_us / acquisition_dwell_us if noise_dwell_us > 0 and acquisition_dwell_us > 0 else 1.0
    if oversampling_removed and relative_noise_bandwidth > 0:
        ratio /= relative_noise_bandwidth
    return ratio
