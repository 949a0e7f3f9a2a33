"""Raw readouts -> one :class:`~recon_core.kspace.KSpaceSlice` per reconstruction.

Shared by both entry points: the raw-acquisition gadget feeds :class:`SliceAssembler`
acquisition by acquisition; the buffered gadget builds :class:`SliceData` from a ReconData
buffer. :func:`assemble_slice` then turns either into a k-space slice:

1. every readout is placed on a full line with its centre sample at ``length // 2``
   (asymmetric echo, discarded samples, reversed readouts handled);
2. prewhitening with the noise scan's covariance (scaled to the imaging dwell time);
3. readout oversampling removed down to the recon matrix x;
4. lines placed on grid row ``kspace_encode_step_1 - ky_centre + ny // 2`` (so partial-Fourier
   and off-centre limits land right); calibration-only and imaging lines merged, lines that hit
   one row (averages, calibration-and-imaging duplicates) averaged.

The maths of each step lives in :mod:`recon_core.readout` and :mod:`recon_core.prewhitening`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import ismrmrd
import numpy as np
import torch
from torch import Tensor

from gadgets.encoding import EncodingInfo
from recon_core.kspace import KSpaceSlice, SliceGeometry, SliceIndex
from recon_core.prewhitening import noise_covariance, prewhiten, whitening_matrix
from recon_core.readout import (
    centre_readout,
    imaging_noise_scale,
    place_lines,
    readout_support,
    remove_readout_oversampling,
)

log = logging.getLogger(__name__)

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
    """

    ky: int
    samples: Tensor
    centre_sample: int
    calibration_only: bool
    header: ismrmrd.AcquisitionHeader


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
    """

    index: SliceIndex
    lines: tuple[ReadoutLine, ...]
    line_length: int
    noise: NoiseScan | None = None


@dataclass(frozen=True)
class AssembledSlice:
    """A k-space slice plus what the image headers need from its readouts.

    Attributes:
        kspace: the slice for ``recon_core``: ``(C, ky=encoded y, kx=recon x)``.
        reference: header of the readout nearest the k-space centre (geometry, time stamps).
        pixel_spacing_mm: ``(dy, dx)`` of the reconstruction grid.
        num_lines: readouts used; num_calibration_lines: of which calibration only.
    """

    kspace: KSpaceSlice
    reference: ismrmrd.AcquisitionHeader
    pixel_spacing_mm: tuple[float, float]
    num_lines: int
    num_calibration_lines: int


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
    )


def assemble_slice(data: SliceData, encoding: EncodingInfo) -> AssembledSlice:
    """Turn the readouts of one reconstruction into a prewhitened k-space slice.

    Raises:
        ValueError: for inconsistent coil counts, readouts that do not fit or lines outside
            the encoding grid; the message names the slice.
    """
    if not data.lines:
        raise ValueError(f"{describe(data.index)}: no imaging readouts")
    coils = {int(line.samples.shape[0]) for line in data.lines}
    if len(coils) != 1:
        raise ValueError(f"{describe(data.index)}: readouts with different coil counts {sorted(coils)}")
    placed = [centre_readout(line.samples, line.centre_sample, data.line_length) for line in data.lines]
    stacked = torch.stack([line for line, _ in placed])  # (L, C, length)
    covariance = None
    if data.noise is not None:
        covariance = _imaging_covariance(data, encoding, stacked.shape[1])
        whitening = whitening_matrix(covariance)
        stacked = prewhiten(stacked.transpose(0, 1), whitening).transpose(0, 1)
    output_samples = min(data.line_length, encoding.recon_matrix[0])
    stacked = remove_readout_oversampling(stacked, output_samples)
    rows = [line.ky + encoding.ky_offset for line in data.lines]
    grid_rows = encoding.encoded_matrix[1]
    try:
        kspace, _ = place_lines(stacked, rows, grid_rows)
    except ValueError as error:
        raise ValueError(f"{describe(data.index)}: {error}") from None
    mask = torch.zeros(grid_rows, output_samples, dtype=torch.bool)
    for row, (_, acquired) in zip(rows, placed, strict=True):
        mask[row] |= readout_support(acquired, data.line_length, output_samples)
    kspace = kspace * mask
    reference = _reference_header(data.lines, encoding.ky_centre)
    kspace_slice = KSpaceSlice(
        kspace=kspace,
        mask=mask,
        noise_covariance=covariance,
        prewhitened=covariance is not None,
        geometry=_geometry(reference, encoding),
        index=data.index,
    )
    return AssembledSlice(
        kspace=kspace_slice,
        reference=reference,
        pixel_spacing_mm=encoding.grid_spacing_mm,
        num_lines=len(data.lines),
        num_calibration_lines=sum(line.calibration_only for line in data.lines),
    )


class SliceAssembler:
    """Collects raw acquisitions; hands back a :class:`SliceData` at each ACQ_LAST_IN_SLICE.

    Noise readouts are kept for prewhitening (never imaged); navigator / phase-correction /
    feedback readouts are counted in :attr:`skipped` and dropped; everything else is grouped by
    (slice, contrast, phase, repetition, set). :meth:`flush` returns the groups still open at
    the end of the stream.
    """

    def __init__(self, encoding: EncodingInfo) -> None:
        self.encoding = encoding
        self.skipped: collections.Counter[str] = collections.Counter()
        self._noise: list[Tensor] = []
        self._noise_dwell_us = 0.0
        self._pending: dict[SliceIndex, list[ReadoutLine]] = {}

    def add(self, acquisition: ismrmrd.Acquisition) -> SliceData | None:
        """Take one acquisition; return the finished slice when it is flagged LAST_IN_SLICE."""
        header = acquisition.getHead()
        role = line_role(header, self.encoding)
        if role == "noise":
            self._noise.append(torch.from_numpy(np.array(acquisition.data, dtype=np.complex64, copy=True)))
            self._noise_dwell_us = float(header.sample_time_us)
            return None
        if role == "skip":
            self.skipped[_skip_reason(header)] += 1
            return None
        index = slice_index(header)
        self._pending.setdefault(index, []).append(readout_line(acquisition))
        if has_flag(header, ismrmrd.ACQ_LAST_IN_SLICE):
            return self._finish(index)
        return None

    def flush(self) -> list[SliceData]:
        """The slices that never saw LAST_IN_SLICE, in order of their first readout."""
        return [self._finish(index) for index in list(self._pending)]

    @property
    def noise(self) -> NoiseScan | None:
        """All noise readouts so far, concatenated, or ``None``."""
        if not self._noise:
            return None
        return NoiseScan(samples=torch.cat(self._noise, dim=1), dwell_us=self._noise_dwell_us)

    def _finish(self, index: SliceIndex) -> SliceData:
        lines = tuple(self._pending.pop(index))
        return SliceData(
            index=index, lines=lines, line_length=self.encoding.encoded_matrix[0], noise=self.noise
        )


def _imaging_covariance(data: SliceData, encoding: EncodingInfo, coils: int) -> Tensor:
    assert data.noise is not None
    if data.noise.samples.shape[0] != coils:
        raise ValueError(
            f"{describe(data.index)}: the noise scan has {data.noise.samples.shape[0]} coils, "
            f"the data {coils}"
        )
    scale = imaging_noise_scale(
        data.noise.dwell_us,
        float(data.lines[0].header.sample_time_us),
        encoding.relative_noise_bandwidth,
        oversampling_removed=data.line_length > encoding.recon_matrix[0],
    )
    return noise_covariance(data.noise.samples) * scale


def _reference_header(lines: Sequence[ReadoutLine], ky_centre: int) -> ismrmrd.AcquisitionHeader:
    """The header of the imaging readout nearest the k-space centre (any readout if none)."""
    imaging = [line for line in lines if not line.calibration_only] or list(lines)
    return min(imaging, key=lambda line: abs(line.ky - ky_centre)).header


def _geometry(header: ismrmrd.AcquisitionHeader, encoding: EncodingInfo) -> SliceGeometry:
    return SliceGeometry(
        matrix_size=encoding.recon_matrix,
        field_of_view_mm=encoding.recon_fov_mm,
        position=_triple(header.position),
        read_dir=_triple(header.read_dir),
        phase_dir=_triple(header.phase_dir),
        slice_dir=_triple(header.slice_dir),
        patient_table_position=_triple(header.patient_table_position),
        acquisition_time_stamp=int(header.acquisition_time_stamp),
    )


def _triple(values: object) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)  # type: ignore[attr-defined]
    return x, y, z


def _skip_reason(header: ismrmrd.AcquisitionHeader) -> str:
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
