"""Raw readouts -> :class:`~recon_core.physics.kspace.KSpaceSlice` reconstructions.

Shared by both entry points: the raw-acquisition gadget feeds :class:`SliceAssembler`
acquisition by acquisition; the buffered gadget builds :class:`~gadgets.slices.SliceData` (the
readout records are in :mod:`gadgets.slices`) from a ReconData buffer. :func:`assemble` then
turns either into k-space slices:

1. every readout is placed on a full line with its centre sample at ``length // 2``
   (asymmetric echo, discarded samples, reversed readouts handled);
2. prewhitening with the noise scan's covariance (scaled to the imaging dwell time);
3. readout oversampling removed down to the recon matrix x;
4. lines placed on grid row ``kspace_encode_step_1 - ky_centre + ny // 2`` (so partial-Fourier
   and off-centre limits land right); calibration-only and imaging lines merged, lines that hit
   one row (averages, calibration-and-imaging duplicates) averaged;
5. 3D Cartesian encodings (encoded matrix z > 1): lines also placed on partition-encoding plane
   ``kspace_encode_step_2 - kz_centre + nz // 2``, then a centred inverse FFT along kz gives
   hybrid space; each partition of the recon field of view z is one 2D slice with its own
   :class:`Partition` (index, offset along the slice direction, thickness). A 2D encoding whose
   slice carries several ``kspace_encode_step_2`` values is refused before any compute.

Nothing is dropped silently: a readout outside the header's encoding limits, a readout that
repeats a line of a slice already reconstructed, a slice with too few lines
(:func:`check_sampling`), all-zero readouts or an unusable noise scan raise
:class:`RejectedReadoutError` or :class:`SliceDataError` with a one-line reason naming the slice.

The maths of each step lives in :mod:`gadgets.readout` and :mod:`recon_core.physics.prewhitening`.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence

import ismrmrd
import numpy as np
import torch
from torch import Tensor

from gadgets.encoding import EncodingInfo
from gadgets.readout import (
    centre_readout,
    crop_or_pad,
    imaging_noise_scale,
    kz_to_partitions,
    place_lines,
    readout_support,
    remove_readout_oversampling,
)
from gadgets.slices import (
    AssembledSlice,
    NoiseScan,
    Partition,
    ReadoutLine,
    RejectedReadoutError,
    SliceData,
    SliceDataError,
    as_triple,
    describe,
    has_flag,
    line_role,
    readout_line,
    shifted_position,
    skip_reason,
    slice_index,
)
from recon_core.physics.kspace import KSpaceSlice, SliceGeometry, SliceIndex
from recon_core.physics.prewhitening import noise_covariance, prewhiten, whitening_matrix

log = logging.getLogger(__name__)

#: Highest nominal acceleration (encoded phase-encode positions over distinct acquired ones) a
#: slice may have. Twice the most aggressive 1D undersampling the presets were benchmarked
#: with (R = 8, README): beyond it the image is not determined by the data, e.g. a slice
#: built from one stray readout.
MAX_NOMINAL_ACCELERATION = 16


def minimum_lines(positions: int) -> int:
    """Fewest distinct phase-encode positions a slice needs along an axis of ``positions``:
    at least 2, and at least ``1 / MAX_NOMINAL_ACCELERATION`` of them."""
    return max(2, math.ceil(positions / MAX_NOMINAL_ACCELERATION))


def check_sampling(data: SliceData, encoding: EncodingInfo) -> None:
    """Refuse a slice whose lines cannot determine an image (before any compute).

    A slice needs :func:`minimum_lines` distinct ky lines of the encoded matrix y; a 3D slice
    also as many distinct kz planes of the matrix z, and every ky line acquired at a
    contiguous run of kz (a gap is kz undersampling, which the per-partition reconstruction in
    hybrid space cannot unfold; partial Fourier and elliptical shutters leave no gaps).

    Raises:
        SliceDataError: naming the slice and how many lines it had.
    """
    if not data.lines:
        return  # assemble() says why
    label = describe(data.index)
    rows = encoding.encoded_matrix[1]
    distinct = sorted({line.ky for line in data.lines})
    needed = minimum_lines(rows)
    if len(distinct) < needed:
        raise SliceDataError(
            f"{label}: only {len(distinct)} distinct phase-encode line(s) (ky {_listing(distinct)}) in "
            f"{len(data.lines)} readout(s) of a {rows}-line matrix; at least {needed} are needed "
            f"(nominal acceleration at most {MAX_NOMINAL_ACCELERATION}): not reconstructed"
        )
    if not encoding.is_3d:
        return
    planes_of_row: dict[int, set[int]] = {}
    for line in data.lines:
        planes_of_row.setdefault(line.ky, set()).add(line.kz)
    planes = sorted(set().union(*planes_of_row.values()))
    depth = encoding.encoded_matrix[2]
    if len(planes) < minimum_lines(depth):
        raise SliceDataError(
            f"{label}: only {len(planes)} distinct partition encoding(s) (kz {_listing(planes)}) of a "
            f"{depth}-partition matrix; at least {minimum_lines(depth)} are needed: not reconstructed"
        )
    for ky, row_planes in sorted(planes_of_row.items()):
        if max(row_planes) - min(row_planes) + 1 != len(row_planes):
            raise SliceDataError(
                f"{label}: line ky {ky} is acquired at kz {_listing(sorted(row_planes))}, with gaps: kz "
                "undersampling cannot be unfolded partition by partition: not reconstructed"
            )


def assemble(data: SliceData, encoding: EncodingInfo) -> list[AssembledSlice]:
    """Turn the readouts of one reconstruction into prewhitened k-space slices.

    Returns:
        One :class:`AssembledSlice` for a 2D encoding; for a 3D encoding one per output
        partition (:meth:`EncodingInfo.partition_grid`), in hybrid space: the lines on the
        ``(kz, ky, kx)`` grid, centred inverse FFT along kz, each partition a 2D slice whose
        mask is every line acquired at any kz, its position shifted along the slice direction.

    Raises:
        SliceDataError: for no or all-zero readouts, inconsistent coil counts, counters outside
            the header's limits, several kz values in a 2D encoding, lines outside the grid
            or an unusable noise scan; the message names the slice.
        ValueError: for readouts that do not fit the line length.
    """
    _check_readouts(data, encoding)
    label = describe(data.index)
    placed = [centre_readout(line.samples, line.centre_sample, data.line_length) for line in data.lines]
    stacked = torch.stack([line for line, _ in placed])  # (L, C, length)
    if not bool((stacked != 0).any()):
        raise SliceDataError(_all_zero(label, len(data.lines)))
    covariance = None
    if data.noise is not None:
        covariance, whitening = _noise_whitening(data, encoding, stacked.shape[1])
        stacked = prewhiten(stacked.transpose(0, 1), whitening).transpose(0, 1)
    output_samples = min(data.line_length, encoding.recon_matrix[0])
    stacked = remove_readout_oversampling(stacked, output_samples)
    rows = [line.ky + encoding.ky_offset for line in data.lines]
    depth = encoding.encoded_matrix[2] if encoding.is_3d else 1
    planes = [line.kz + encoding.kz_offset if encoding.is_3d else 0 for line in data.lines]
    outside = sorted(
        {line.kz for line, plane in zip(data.lines, planes, strict=True) if not 0 <= plane < depth}
    )
    if outside:
        raise SliceDataError(
            f"{label}: partition encodings kz {_listing(outside)} fall outside the {depth}-partition grid "
            "(kspace_encoding_step_2 limits or matrix size z in the header do not match the data)"
        )
    grid_rows = encoding.encoded_matrix[1]
    kspace = torch.zeros((stacked.shape[1], depth, grid_rows, output_samples), dtype=torch.complex64)
    for plane in sorted(set(planes)):
        chosen = [number for number, value in enumerate(planes) if value == plane]
        try:
            kspace[:, plane], _ = place_lines(stacked[chosen], [rows[number] for number in chosen], grid_rows)
        except ValueError as error:
            raise SliceDataError(f"{label}: {error}") from None
    mask = torch.zeros(depth, grid_rows, output_samples, dtype=torch.bool)
    for row, plane, (_, acquired) in zip(rows, planes, placed, strict=True):
        mask[plane, row] |= readout_support(acquired, data.line_length, output_samples)
    kspace = kspace * mask
    reference = _reference_header(data.lines, encoding)
    common = {
        "reference": reference,
        "pixel_spacing_mm": encoding.grid_spacing_mm,
        "num_lines": len(data.lines),
        "num_calibration_lines": sum(line.calibration_only for line in data.lines),
    }
    if not encoding.is_3d:
        kspace_slice = KSpaceSlice(
            kspace=kspace[:, 0],
            mask=mask[0],
            noise_covariance=covariance,
            prewhitened=covariance is not None,
            geometry=_geometry(reference, encoding),
            index=data.index,
        )
        return [AssembledSlice(kspace=kspace_slice, **common)]
    grid, count, spacing = encoding.partition_grid()
    hybrid = crop_or_pad(kz_to_partitions(kspace, grid, dim=1), count, dim=1)
    in_plane = mask.any(dim=0)
    slices = []
    for index in range(count):
        partition = Partition(index, count, (index - count // 2) * spacing, spacing)
        kspace_slice = KSpaceSlice(
            kspace=(hybrid[:, index] * in_plane).contiguous(),
            mask=in_plane,
            noise_covariance=covariance,
            prewhitened=covariance is not None,
            geometry=_geometry(reference, encoding, partition.offset_mm),
            index=data.index,
        )
        slices.append(AssembledSlice(kspace=kspace_slice, partition=partition, **common))
    return slices


def assemble_slice(data: SliceData, encoding: EncodingInfo) -> AssembledSlice:
    """:func:`assemble` for a 2D encoding (exactly one slice).

    Raises:
        ValueError: as :func:`assemble`, or for a 3D encoding (several partitions).
    """
    if encoding.is_3d:
        raise ValueError(
            f"{describe(data.index)}: a 3D encoding gives one slice per partition: use assemble()"
        )
    (assembled,) = assemble(data, encoding)
    return assembled


def _check_readouts(data: SliceData, encoding: EncodingInfo) -> None:
    """The checks :func:`assemble` makes before any compute."""
    label = describe(data.index)
    if not data.lines:
        if data.zero_readouts:
            raise SliceDataError(_all_zero(label, data.zero_readouts))
        raise SliceDataError(f"{label}: no imaging readouts")
    coils = {int(line.samples.shape[0]) for line in data.lines}
    if len(coils) != 1:
        raise SliceDataError(f"{label}: readouts with different coil counts {sorted(coils)}")
    for line in data.lines:
        problem = encoding.counter_violation(line.header.idx)
        if problem is not None:
            raise SliceDataError(f"{label}: readout ky {line.ky}: {problem}: not reconstructed")
    partitions = sorted({line.kz for line in data.lines})
    if not encoding.is_3d and len(partitions) > 1:
        raise SliceDataError(
            f"{label}: its readouts carry {len(partitions)} partition encodings (kspace_encode_step_2 "
            f"{_listing(partitions)}) but the header's encoded matrix z is 1: inconsistent 3D data, "
            "not reconstructed"
        )


def _all_zero(label: str, count: int) -> str:
    return f"{label}: all {count} readout(s) hold only zeros (no signal): nothing to reconstruct"


def _listing(values: Sequence[int], shown: int = 8) -> str:
    """``"1, 2, 3"`` or ``"0, 1, ..., 31 (32 values)"`` for long lists."""
    if len(values) <= shown:
        return ", ".join(str(value) for value in values)
    head = ", ".join(str(value) for value in values[: shown - 1])
    return f"{head}, ..., {values[-1]} ({len(values)} values)"


class SliceAssembler:
    """Collects raw acquisitions; hands back a :class:`SliceData` at each ACQ_LAST_IN_SLICE.

    Noise readouts are kept for prewhitening (never imaged); navigator / phase-correction /
    feedback readouts are counted in :attr:`skipped` and dropped; everything else is grouped by
    (slice, contrast, phase, repetition, set). :meth:`flush` returns the groups still open at
    the end of the stream. :meth:`add` refuses (raises :class:`RejectedReadoutError`) a readout
    whose counters lie outside the header's encoding limits, and one that repeats a line
    (ky, kz, average) of a slice already handed back while no new group of that slice is open:
    it can no longer be merged, and alone it would make a one-line image.
    """

    def __init__(self, encoding: EncodingInfo) -> None:
        self.encoding = encoding
        self.skipped: collections.Counter[str] = collections.Counter()
        self._noise: list[Tensor] = []
        self._noise_dwell_us = 0.0
        self._pending: dict[SliceIndex, list[ReadoutLine]] = {}
        self._finished: dict[SliceIndex, set[tuple[int, int, int]]] = {}

    def add(self, acquisition: ismrmrd.Acquisition) -> SliceData | None:
        """Take one acquisition; return the finished slice when it is flagged LAST_IN_SLICE.

        Raises:
            RejectedReadoutError: for a readout outside the encoding limits or a repeated readout of
                a finished slice (the readout is not used).
        """
        header = acquisition.getHead()
        role = line_role(header, self.encoding)
        if role == "noise":
            self._noise.append(torch.from_numpy(np.array(acquisition.data, dtype=np.complex64, copy=True)))
            self._noise_dwell_us = float(header.sample_time_us)
            return None
        if role == "skip":
            self.skipped[skip_reason(header)] += 1
            return None
        index = slice_index(header)
        problem = self.encoding.counter_violation(header.idx)
        if problem is not None:
            raise RejectedReadoutError(
                f"readout rejected: {problem} (readout ky {int(header.idx.kspace_encode_step_1)} of "
                f"{describe(index)}): not used",
                key=("limits", problem),
            )
        line = readout_line(acquisition)
        if index not in self._pending and _line_key(line) in self._finished.get(index, ()):
            raise RejectedReadoutError(
                f"{describe(index)}: readout ky {line.ky} kz {line.kz} average {int(header.idx.average)} "
                "repeats a line of this slice after it was reconstructed at LAST_IN_SLICE: not used",
                key=("repeat", index),
            )
        self._pending.setdefault(index, []).append(line)
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
        self._finished.setdefault(index, set()).update(map(_line_key, lines))
        return SliceData(
            index=index, lines=lines, line_length=self.encoding.encoded_matrix[0], noise=self.noise
        )


def _line_key(line: ReadoutLine) -> tuple[int, int, int]:
    """What makes a readout a repeat of another: (ky, kz, average)."""
    return line.ky, line.kz, int(line.header.idx.average)


def _noise_whitening(data: SliceData, encoding: EncodingInfo, coils: int) -> tuple[Tensor, Tensor]:
    """The imaging noise covariance from the noise scan and its whitening matrix."""
    assert data.noise is not None
    if data.noise.samples.shape[0] != coils:
        raise SliceDataError(
            f"{describe(data.index)}: the noise scan has {data.noise.samples.shape[0]} coils, "
            f"the data {coils}"
        )
    scale = imaging_noise_scale(
        data.noise.dwell_us,
        float(data.lines[0].header.sample_time_us),
        encoding.relative_noise_bandwidth,
        oversampling_removed=data.line_length > encoding.recon_matrix[0],
    )
    try:
        covariance = noise_covariance(data.noise.samples) * scale
        return covariance, whitening_matrix(covariance)
    except ValueError as error:
        raise SliceDataError(
            f"{describe(data.index)}: the noise scan cannot be used for prewhitening: {error}"
        ) from None


def _reference_header(lines: Sequence[ReadoutLine], encoding: EncodingInfo) -> ismrmrd.AcquisitionHeader:
    """The header of the imaging readout nearest the k-space centre (any readout if none)."""
    imaging = [line for line in lines if not line.calibration_only] or list(lines)
    return min(
        imaging, key=lambda line: (abs(line.ky - encoding.ky_centre), abs(line.kz - encoding.kz_centre))
    ).header


def _geometry(
    header: ismrmrd.AcquisitionHeader, encoding: EncodingInfo, offset_mm: float = 0.0
) -> SliceGeometry:
    """The slice geometry of ``header``, moved ``offset_mm`` along its slice direction."""
    return SliceGeometry(
        matrix_size=encoding.recon_matrix,
        field_of_view_mm=encoding.recon_fov_mm,
        position=shifted_position(header, offset_mm),
        read_dir=as_triple(header.read_dir),
        phase_dir=as_triple(header.phase_dir),
        slice_dir=as_triple(header.slice_dir),
        patient_table_position=as_triple(header.patient_table_position),
        acquisition_time_stamp=int(header.acquisition_time_stamp),
    )
