"""The readouts of one reconstruction: what a readout is for, and the slice records built from them.

* :func:`line_role` sorts a readout into noise, skipped (navigators, phase correction, ...),
  calibration only or imaging; :func:`slice_index` names the reconstruction it belongs to;
* :class:`ReadoutLine`, :class:`NoiseScan`, :class:`SliceData`: readouts before assembly
  (:mod:`gadgets.assembly`, :mod:`gadgets.buffers`);
* :class:`AssembledSlice`, :class:`Partition`: a k-space slice and what the image headers need;
* :class:`SliceDataError`, :class:`RejectedReadoutError`: one-line reasons naming the slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import ismrmrd
import numpy as np
import torch
from torch import Tensor

from gadgets.encoding import EncodingInfo
from recon_core.physics.kspace import KSpaceSlice, SliceIndex


class SliceDataError(ValueError):
    """The readouts of one reconstruction cannot be reconstructed as sent (message names it)."""


class RejectedReadoutError(ValueError):
    """A readout that is not used, with the reason; ``key`` groups repeats of one reason."""

    def __init__(self, text: str, key: object) -> None:
        super().__init__(text)
        self.key = key


#: Readouts that carry no image k-space: navigators, phase correction, feedback, dummy scans.
SKIPPED_FLAGS: tuple[int, ...] = (
    ismrmrd.ACQ_IS_NAVIGATION_DATA,
    ismrmrd.ACQ_IS_PHASECORR_DATA,
    ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
    ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
    ismrmrd.ACQ_IS_DUMMYSCAN_DATA,
    ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION,
    ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
)


def has_flag(header: ismrmrd.AcquisitionHeader, flag: int) -> bool:
    """Whether ISMRMRD flag number ``flag`` (1-based, as in ``ismrmrd.ACQ_*``) is set."""
    return bool(int(header.flags) & (1 << (flag - 1)))


def slice_index(header: ismrmrd.AcquisitionHeader) -> SliceIndex:
    """Which reconstruction a readout belongs to: (slice, contrast, phase, repetition, set)."""
    idx = header.idx
    return SliceIndex(
        slice=int(idx.slice),
        contrast=int(idx.contrast),
        phase=int(idx.phase),
        repetition=int(idx.repetition),
        set=int(idx.set),
    )


def line_role(header: ismrmrd.AcquisitionHeader, encoding: EncodingInfo) -> str:
    """``"noise"``, ``"skip"``, ``"calibration"`` (calibration only) or ``"image"``."""
    if has_flag(header, ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
        return "noise"
    if any(has_flag(header, flag) for flag in SKIPPED_FLAGS):
        return "skip"
    if int(header.encoding_space_ref) != 0:
        return "skip"
    if has_flag(header, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION):
        return "skip" if encoding.calibration_is_separate else "calibration"
    return "image"


@dataclass(frozen=True)
class ReadoutLine:
    """One phase-encode readout ready for placement.

    Attributes:
        ky: ``kspace_encode_step_1``.
        samples: ``(C, N)`` complex64, discarded samples removed, reversed readouts flipped.
        centre_sample: index of the k-space centre within ``samples``.
        calibration_only: flagged ACQ_IS_PARALLEL_CALIBRATION (not ..._AND_IMAGING).
        header: the acquisition header (geometry, time stamps, counters).
        kz: ``kspace_encode_step_2`` (the partition encoding of 3D scans).
    """

    ky: int
    samples: Tensor
    centre_sample: int
    calibration_only: bool
    header: ismrmrd.AcquisitionHeader
    kz: int = 0


@dataclass(frozen=True)
class NoiseScan:
    """Noise readouts of a scan: ``samples`` ``(C, N)`` complex64 at ``dwell_us`` per sample."""

    samples: Tensor
    dwell_us: float


@dataclass(frozen=True)
class SliceData:
    """The readouts of one reconstruction before assembly.

    Attributes:
        index: slice / contrast / phase / repetition / set.
        lines: the readouts, in arrival order.
        line_length: full readout line length (encoded matrix x for raw readouts, the buffer's
            readout size for buffered data).
        noise: the noise scan for prewhitening, or ``None``.
        zero_readouts: readouts that were sent for this reconstruction but hold only zeros
            (left out of ``lines``; a slice of nothing else is reported, never skipped).
    """

    index: SliceIndex
    lines: tuple[ReadoutLine, ...]
    line_length: int
    noise: NoiseScan | None = None
    zero_readouts: int = 0


@dataclass(frozen=True)
class Partition:
    """One partition of a 3D slab as a 2D slice.

    Attributes:
        index: 0-based among the ``count`` output partitions (recon matrix z).
        count: output partitions of the slab.
        offset_mm: partition centre relative to the slab centre along the slice direction.
        thickness_mm: partition spacing (recon field of view z / recon matrix z).
    """

    index: int
    count: int
    offset_mm: float
    thickness_mm: float


@dataclass(frozen=True)
class AssembledSlice:
    """A k-space slice plus what the image headers need from its readouts.

    Attributes:
        kspace: the slice for ``recon_core``: ``(C, ky=encoded y, kx=recon x)``.
        reference: header of the readout nearest the k-space centre (geometry, time stamps).
        pixel_spacing_mm: ``(dy, dx)`` of the reconstruction grid.
        num_lines: readouts used; num_calibration_lines: of which calibration only.
        partition: where this slice lies in its slab (3D encodings), ``None`` for 2D.
    """

    kspace: KSpaceSlice
    reference: ismrmrd.AcquisitionHeader
    pixel_spacing_mm: tuple[float, float]
    num_lines: int
    num_calibration_lines: int
    partition: Partition | None = None

    @property
    def label(self) -> str:
        """``describe(index)`` plus ``" partition P"`` for a partition of a 3D slab."""
        label = describe(self.kspace.index)
        return label if self.partition is None else f"{label} partition {self.partition.index}"


def readout_line(acquisition: ismrmrd.Acquisition) -> ReadoutLine:
    """A :class:`ReadoutLine` from a received acquisition (copies its data)."""
    header = acquisition.getHead()
    data = np.array(acquisition.data, dtype=np.complex64, copy=True)
    count = data.shape[-1]
    pre, post = int(header.discard_pre), int(header.discard_post)
    centre = int(header.center_sample)
    if centre == 0 and pre == 0 and post == 0:
        centre = count // 2  # centre sample not filled in by the converter: a symmetric echo
    samples = torch.from_numpy(data[:, pre : count - post])
    centre -= pre
    if has_flag(header, ismrmrd.ACQ_IS_REVERSE):
        samples = samples.flip(-1)
        centre = samples.shape[-1] - 1 - centre
    return ReadoutLine(
        ky=int(header.idx.kspace_encode_step_1),
        samples=samples,
        centre_sample=centre,
        calibration_only=has_flag(header, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION),
        header=header,
        kz=int(header.idx.kspace_encode_step_2),
    )


def shifted_position(header: object, offset_mm: float) -> tuple[float, float, float]:
    """``header.position + offset_mm * header.slice_dir`` (acquisition or image header)."""
    position = as_triple(header.position)  # type: ignore[attr-defined]
    direction = as_triple(header.slice_dir)  # type: ignore[attr-defined]
    x, y, z = (p + offset_mm * d for p, d in zip(position, direction, strict=True))
    return x, y, z


def as_triple(values: object) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)  # type: ignore[attr-defined]
    return x, y, z


def skip_reason(header: ismrmrd.AcquisitionHeader) -> str:
    names = {flag: name for name, flag in vars(ismrmrd).items() if name.startswith("ACQ_IS_")}
    for flag in SKIPPED_FLAGS:
        if has_flag(header, flag):
            return names.get(flag, f"flag {flag}")
    if int(header.encoding_space_ref) != 0:
        return f"encoding space {int(header.encoding_space_ref)}"
    return "ACQ_IS_PARALLEL_CALIBRATION (separate calibration scan)"


def describe(index: SliceIndex) -> str:
    """``"slice S contrast C phase P repetition R set T"`` for log and error messages."""
    return (
        f"slice {index.slice} contrast {index.contrast} phase {index.phase} "
        f"repetition {index.repetition} set {index.set}"
    )
