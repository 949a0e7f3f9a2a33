"""Data containers for one 2D slice of multi-coil k-space and the geometry to write it back.

Conventions (the single place they are written down; every module follows them):

* ``kspace``: ``(C, ky, kx)`` complex64: coils, phase-encode lines, readout samples, on the
  reconstruction grid (readout oversampling already removed), centred so that the k-space
  centre sits at index ``(ky // 2, kx // 2)``. Unacquired samples are zero.
* ``mask``: ``(ky, kx)`` bool, ``True`` where a sample was acquired.
* Images have shape ``(ky, kx)`` = ``(H, W)``: rows run along the phase-encode direction,
  columns along the readout direction. In ISMRMRD terms an image array ``(H, W)`` is stored as
  ``matrix_size = (W, H, 1)`` (x = readout first).
* Lengths in millimetres, directions as unit vectors in the scanner's patient coordinate
  system (as ISMRMRD stores them), noise covariance in (k-space units)^2 per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

Vector3 = tuple[float, float, float]


@dataclass(frozen=True)
class SliceIndex:
    """Which reconstruction this slice is in the scan (ISMRMRD encoding counters)."""

    slice: int = 0
    contrast: int = 0
    phase: int = 0
    repetition: int = 0
    set: int = 0
    average: int = 0


@dataclass(frozen=True)
class SliceGeometry:
    """What an image header needs to place the reconstructed slice in the scanner frame.

    Attributes:
        matrix_size: recon matrix ``(x=readout, y=phase, z)`` in pixels.
        field_of_view_mm: recon field of view ``(x, y, z)`` in mm.
        position: slice centre in mm (patient coordinates).
        read_dir, phase_dir, slice_dir: unit direction cosines.
        patient_table_position: table position in mm.
        acquisition_time_stamp: scanner clock ticks (2.5 ms) of the first readout, 0 if unknown.
    """

    matrix_size: tuple[int, int, int] = (0, 0, 1)
    field_of_view_mm: Vector3 = (0.0, 0.0, 0.0)
    position: Vector3 = (0.0, 0.0, 0.0)
    read_dir: Vector3 = (1.0, 0.0, 0.0)
    phase_dir: Vector3 = (0.0, 1.0, 0.0)
    slice_dir: Vector3 = (0.0, 0.0, 1.0)
    patient_table_position: Vector3 = (0.0, 0.0, 0.0)
    acquisition_time_stamp: int = 0


@dataclass(frozen=True)
class KSpaceSlice:
    """One 2D slice of multi-coil Cartesian k-space, ready for reconstruction.

    Attributes:
        kspace: ``(C, ky, kx)`` complex64, zeros where not acquired.
        mask: ``(ky, kx)`` bool sampling mask.
        noise_covariance: ``(C, C)`` complex64 covariance of the k-space noise, or ``None``
            when no noise pre-scan was available.
        prewhitened: ``True`` if ``kspace`` has already been whitened so that its noise
            covariance is the identity (then ``noise_covariance`` is the one before whitening).
        geometry: how to place the image in the scanner frame.
        index: which slice / contrast / phase / repetition / set this is.
    """

    kspace: Tensor
    mask: Tensor
    noise_covariance: Tensor | None = None
    prewhitened: bool = False
    geometry: SliceGeometry = field(default_factory=SliceGeometry)
    index: SliceIndex = field(default_factory=SliceIndex)

    def __post_init__(self) -> None:
        if self.kspace.ndim != 3:
            raise ValueError(f"kspace must be (coils, ky, kx), got shape {tuple(self.kspace.shape)}")
        if not self.kspace.is_complex():
            raise ValueError(f"kspace must be complex, got dtype {self.kspace.dtype}")
        if tuple(self.mask.shape) != tuple(self.kspace.shape[-2:]):
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} does not match k-space grid "
                f"{tuple(self.kspace.shape[-2:])}"
            )
        if self.mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool, got dtype {self.mask.dtype}")
        if not bool(self.mask.any()):
            raise ValueError("mask is empty: no k-space sample was acquired")
        if self.noise_covariance is not None:
            coils = self.kspace.shape[0]
            if tuple(self.noise_covariance.shape) != (coils, coils):
                raise ValueError(
                    f"noise_covariance must be ({coils}, {coils}) for {coils} coils, "
                    f"got shape {tuple(self.noise_covariance.shape)}"
                )
        if not bool(torch.isfinite(torch.view_as_real(self.kspace)).all()):
            raise ValueError("kspace contains NaN or Inf")

    @property
    def num_coils(self) -> int:
        return int(self.kspace.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Image grid ``(H, W)`` = ``(ky, kx)``."""
        return int(self.kspace.shape[1]), int(self.kspace.shape[2])

    @property
    def acceleration(self) -> float:
        """Nominal acceleration: grid size over the number of acquired samples."""
        return float(self.mask.numel() / self.mask.sum())

    def to(self, device: torch.device | str) -> KSpaceSlice:
        """A copy with the tensors moved to ``device``."""
        covariance = None if self.noise_covariance is None else self.noise_covariance.to(device)
        return KSpaceSlice(
            kspace=self.kspace.to(device),
            mask=self.mask.to(device),
            noise_covariance=covariance,
            prewhitened=self.prewhitened,
            geometry=self.geometry,
            index=self.index,
        )
