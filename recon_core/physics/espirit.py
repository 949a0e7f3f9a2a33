"""ESPIRiT coil calibration from a fully sampled k-space centre (Uecker et al., MRM 2014).

Used only to *start* the joint image / coil inversion when the data carry a calibration
block (the coils stay jointly estimated afterwards), and to decide how many coil-map sets
(soft SENSE) the data need.

The method, as implemented here:

1. **Calibration block**: the largest rectangle around the k-space centre ``(ky//2, kx//2)``
   in which every sample was acquired (:func:`calibration_region`).
2. **Calibration matrix** ``A``: every ``k x k`` patch of the block, all coils, one row each
   (``rows x C k^2``). Its right singular vectors with singular value above
   ``threshold * sigma_max`` span the shift-invariant "null space complement": each is a
   multi-coil k-space kernel ``v_n`` (``C x k x k``) with ``v_n^H patch ~ consistent``.
3. **Image-space operator**: per pixel ``x`` the ``C x C`` matrix
   ``G(x) = (N / k^2) sum_n V_n(x) V_n(x)^H``, ``V_n(x)`` the orthonormal inverse DFT of the
   kernel zero-padded to the image size (``N = H W``). Coil sensitivities are eigenvectors of
   ``G(x)`` with eigenvalue 1; the eigenvalue is ~1 inside the object and falls to 0 outside.
   Where an object wider than the field of view folds onto itself, two eigenvalues are ~1
   and the second eigenvector is the sensitivity of the folded-in part (soft SENSE).
4. **Phase**: eigenvectors have an arbitrary per-pixel phase. Each is rotated so that its
   projection on the data's dominant coil-space direction (a "virtual body coil") is real and
   positive, which makes the maps' phase smooth wherever that virtual coil sees signal.

Shapes: k-space ``(C, ky, kx)`` complex64 centred; maps ``(S, C, H, W)`` complex64 with
``S`` map sets; eigenvalues ``(S, H, W)`` float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.physics.operators import FFT2Operator

DEFAULT_KERNEL = 6
DEFAULT_THRESHOLD = 0.02
NOISE_EDGE_MARGIN = 1.2
EIGEN_BLOCK_PIXELS = 4096


@dataclass(frozen=True)
class CalibrationRegion:
    """Half-open index ranges ``[ky_start, ky_stop) x [kx_start, kx_stop)`` of the block."""

    ky_start: int
    ky_stop: int
    kx_start: int
    kx_stop: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.ky_stop - self.ky_start, self.kx_stop - self.kx_start

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(ky, kx)`` slices of the block, for indexing the last two axes."""
        return slice(self.ky_start, self.ky_stop), slice(self.kx_start, self.kx_stop)


@dataclass(frozen=True)
class EspiritMaps:
    """``maps``: ``(S, C, H, W)`` unit-norm eigenvectors (uncropped); ``eigenvalues``:
    ``(S, H, W)``; ``region``: the calibration block used."""

    maps: Tensor
    eigenvalues: Tensor
    region: CalibrationRegion


def calibration_region(mask: Tensor) -> CalibrationRegion | None:
    """The largest fully sampled rectangle centred (as far as it grows) on ``(ky//2, kx//2)``.

    Grows the ky and kx half-extents alternately, one row or column at a time on each side,
    while every sample inside stays acquired. ``None`` if even the centre sample is missing.

    Args:
        mask: ``(ky, kx)`` bool sampling mask.
    """
    sampled = mask.detach().to("cpu", torch.bool)
    height, width = sampled.shape
    top, bottom = height // 2, height // 2 + 1
    left, right = width // 2, width // 2 + 1
    if not bool(sampled[top, left]):
        return None
    grown = True
    while grown:
        grown = False
        if top > 0 and bool(sampled[top - 1, left:right].all()):
            top, grown = top - 1, True
        if bottom < height and bool(sampled[bottom, left:right].all()):
            bottom, grown = bottom + 1, True
        if left > 0 and bool(sampled[top:bottom, left - 1].all()):
            left, grown = left - 1, True
        if right < width and bool(sampled[top:bottom, right].all()):
            right, grown = right + 1, True
    return CalibrationRegion(top, bottom, left, right)


def _patches(block: Tensor, kernel: int) -> Tensor:
    """All ``kernel x kernel`` patches of ``(C, h, w)``: ``(patches, C * kernel^2)``."""
    channels = block.shape[0]
    windows = block.unfold(1, kernel, 1).unfold(2, kernel, 1)  # (C, h', w', k, k)
    return windows.permute(1, 2, 0, 3, 4).reshape(-1, channels * kernel * kernel)


def _virtual_body_coil(block: Tensor) -> Tensor:
    """The dominant coil-space direction of the calibration data: ``(C,)`` unit norm."""
    samples = block.reshape(block.shape[0], -1)
    covariance = samples @ samples.conj().T
    _, vectors = torch.linalg.eigh(covariance)
    return vectors[:, -1]


def kernel_gram(kernels: Tensor, height: int, width: int) -> Tensor:
    """``G(x) = (N / k^2) sum_n V_n(x) V_n(x)^H`` on the ``H x W`` grid: ``(C, C, H, W)`` complex64.

    ``V_n(x)`` is the centred orthonormal inverse DFT of kernel ``n`` (``kernels``
    ``(K, C, k, k)``) zero-padded around the k-space centre. A product of two such images
    has Fourier coefficients only at the ``(2k - 1)^2`` lags of the kernels' cross-
    correlation, ``Q_cc'(d) = sum_n sum_m K_nc[m + d] conj(K_nc'[m])``, so
    ``G = sqrt(N) / k^2 * F^H(Q placed at the centre)``: ``C^2`` inverse DFTs of the image size
    instead of ``K C`` (exact; the kernels' count ``K`` is often above 100). ``Q`` comes from
    DFTs on a ``(2k - 1)``-point grid, where the circular correlation does not wrap.
    """
    count, channels, kernel = kernels.shape[0], kernels.shape[1], kernels.shape[-1]
    lags = 2 * kernel - 1
    if height < lags or width < lags:
        raise ValueError(f"the image ({height}x{width}) must be at least {lags} samples a side")
    spectra = torch.fft.fft2(kernels.to(torch.complex64), s=(lags, lags))  # (K, C, L, L)
    flat = spectra.reshape(count, channels, lags * lags).permute(2, 1, 0)  # (L^2, C, K)
    cross = (flat @ flat.conj().transpose(-2, -1)).permute(1, 2, 0).reshape(channels, channels, lags, lags)
    correlation = torch.fft.fftshift(torch.fft.ifft2(cross), dim=(-2, -1))  # lag d at d + k - 1
    top, left = height // 2 - (kernel - 1), width // 2 - (kernel - 1)
    scale = math.sqrt(height * width) / kernel**2
    gram = torch.empty((channels, channels, height, width), dtype=torch.complex64, device=kernels.device)
    for row in range(channels):  # one coil row at a time: the FFT's copies stay small
        placed = torch.zeros((channels, height, width), dtype=torch.complex64, device=kernels.device)
        placed[:, top : top + lags, left : left + lags] = correlation[row]
        gram[row] = FFT2Operator().adjoint(placed) * scale
    return gram


def espirit_maps(
    kspace: Tensor,
    region: CalibrationRegion,
    map_sets: int = 2,
    kernel: int = DEFAULT_KERNEL,
    threshold: float = DEFAULT_THRESHOLD,
    noise_std: float | None = None,
) -> EspiritMaps:
    """ESPIRiT eigenvector maps and eigenvalues from the calibration block (module docstring).

    Args:
        kspace: ``(C, H, W)`` complex centred k-space (zeros where not acquired).
        region: the fully sampled block (:func:`calibration_region`); each side must be at
            least ``kernel + 2`` samples.
        map_sets: how many leading eigenvectors to return (1 or 2).
        kernel: the k-space kernel width ``k``.
        threshold: singular values above ``threshold * max`` define the kernels.
        noise_std: std of one real noise component of a k-space sample, if known: singular
            values below ``NOISE_EDGE_MARGIN`` times the largest singular value of a pure-noise
            calibration matrix (``sqrt(2) noise_std (sqrt(rows) + sqrt(cols))``, the
            Marchenko-Pastur edge) are dropped too. Without it, at low SNR noise directions
            pass the relative threshold and every eigenvalue is ~1 (measured on the shipped
            demo: first and second eigenvalues above 0.99 on every pixel).

    Raises:
        ValueError: for a block smaller than ``kernel + 2`` on a side or ``map_sets`` not 1/2.
    """
    if map_sets not in (1, 2):
        raise ValueError(f"map_sets must be 1 or 2, got {map_sets}")
    rows, cols = region.shape
    if min(rows, cols) < kernel + 2:
        raise ValueError(f"calibration block {rows}x{cols} is too small for a {kernel}x{kernel} kernel")
    channels, height, width = kspace.shape
    block = kspace[(..., *region.slices)]
    block = block.to(torch.complex64)
    patches = _patches(block, kernel)
    _, singular, right = torch.linalg.svd(patches, full_matrices=False)
    cutoff = threshold * float(singular[0])
    if noise_std is not None:
        edge = math.sqrt(2.0) * noise_std * (math.sqrt(patches.shape[0]) + math.sqrt(patches.shape[1]))
        cutoff = max(cutoff, NOISE_EDGE_MARGIN * edge)
    keep = max(1, int((singular > cutoff).sum()))
    kernels = right[:keep].reshape(keep, channels, kernel, kernel)

    gram = kernel_gram(kernels, height, width).reshape(channels, channels, height * width)
    eigenvalues = torch.empty((height * width, map_sets), dtype=torch.float32, device=kspace.device)
    eigenvectors = torch.empty((height * width, channels, map_sets), dtype=gram.dtype, device=kspace.device)
    # In blocks of pixels: the eigensolver's copies and outputs stay small (32 coils: the whole
    # image at once peaked at 3 GB).
    for start in range(0, height * width, EIGEN_BLOCK_PIXELS):
        pixels = gram[:, :, start : start + EIGEN_BLOCK_PIXELS].permute(2, 0, 1)  # (P, C, C)
        pixel_values, pixel_vectors = torch.linalg.eigh(pixels)  # ascending
        eigenvalues[start : start + EIGEN_BLOCK_PIXELS] = pixel_values.flip(-1)[:, :map_sets]
        eigenvectors[start : start + EIGEN_BLOCK_PIXELS] = pixel_vectors.flip(-1)[:, :, :map_sets]

    reference = _virtual_body_coil(block)
    projection = (reference.conj()[None, :, None] * eigenvectors).sum(dim=1, keepdim=True)
    phase = projection / projection.abs().clamp_min(1e-12)
    eigenvectors = eigenvectors * phase.conj()
    maps = eigenvectors.permute(2, 1, 0).reshape(map_sets, channels, height, width)
    values = eigenvalues.T.reshape(map_sets, height, width).to(torch.float32)
    return EspiritMaps(maps=maps.to(torch.complex64).contiguous(), eigenvalues=values, region=region)
