"""ReconData (message 1023, from BucketToBufferGadget) -> :class:`~gadgets.slices.SliceData`.

A ReconData carries one ReconBit per encoding space; each bit holds a ``data`` buffer and
optionally a ``ref`` (calibration) buffer, both ``[RO, E1, E2, CHA, N, S, LOC]`` complex64 with
their acquisition headers ``[E1, E2, N, S, LOC]``. Every (N, S, LOC) position is one
reconstruction. Lines are placed by their own header's ``kspace_encode_step_1`` (not by their
position in the buffer), so the layout BucketToBuffer chose for the reference buffer does not
matter; calibration lines from ``ref`` are merged with the imaging lines like in the raw path,
and navigator / phase-correction lines are dropped by the same rules.

Upstream gadgets (NoiseAdjustGadget) have already prewhitened the data with their own scaling,
so no noise scan is attached and the reconstruction estimates the noise level itself.

3D buffers (E2 > 1) are read line by line too: each line keeps its ``kspace_encode_step_2`` and
the assembly reconstructs the slab partition by partition. A position whose readouts were sent
(headers with samples) but hold only zeros becomes a :class:`SliceData` without lines and with
``zero_readouts`` set, which the gadget reports as an ERROR; a position nothing was sent to
(BucketToBuffer sizes N, S and LOC by the encoding limits) is left out.
"""

from __future__ import annotations

from typing import Any

import ismrmrd
import numpy as np
import torch

from gadgets.encoding import EncodingInfo
from gadgets.slices import ReadoutLine, SliceData, has_flag, line_role, slice_index


def slices_from_recon_data(recon_data: Any, encoding: EncodingInfo) -> list[SliceData]:
    """One :class:`SliceData` per (N, S, LOC) of the first encoding space's bit.

    Raises:
        ValueError: for a buffer that is not ``[RO, E1, E2, CHA, N, S, LOC]``.
    """
    bits = list(recon_data.bits)
    if not bits:
        raise ValueError("ReconData without any ReconBit")
    bit = bits[0]
    data = _buffer_array(bit.data.data)
    readout, _, _, _, count_n, count_s, count_loc = data.shape
    buffers = [(data, _headers(bit.data), False)]
    if bit.ref is not None:
        buffers.append((_buffer_array(bit.ref.data), _headers(bit.ref), True))
    slices: list[SliceData] = []
    for loc in range(count_loc):
        for s in range(count_s):
            for n in range(count_n):
                lines: list[ReadoutLine] = []
                zero_headers: list[Any] = []
                for array, headers, is_reference in buffers:
                    found, zeros = _lines(array, headers, (n, s, loc), is_reference)
                    lines.extend(line for line in found if line_role(line.header, encoding) != "skip")
                    zero_headers.extend(h for h in zeros if line_role(h, encoding) != "skip")
                if lines:
                    imaging = [line for line in lines if not line.calibration_only] or lines
                    index = slice_index(imaging[0].header)
                elif zero_headers:
                    index = slice_index(zero_headers[0])
                else:
                    continue  # nothing was sent to this position
                slices.append(
                    SliceData(
                        index=index,
                        lines=tuple(lines),
                        line_length=readout,
                        zero_readouts=0 if lines else len(zero_headers),
                    )
                )
    return slices


def _buffer_array(array: Any) -> np.ndarray:
    """A writable complex64 ``[RO, E1, E2, CHA, N, S, LOC]`` copy of a received buffer."""
    data = np.array(array, dtype=np.complex64, copy=True)
    if data.ndim != 7:
        raise ValueError(f"a ReconBuffer must be [RO, E1, E2, CHA, N, S, LOC], got shape {data.shape}")
    return data


def _headers(buffer: Any) -> np.ndarray:
    headers = np.asarray(buffer.headers, dtype=object)
    if headers.ndim != 5:
        raise ValueError(f"ReconBuffer headers must be [E1, E2, N, S, LOC], got shape {headers.shape}")
    return headers


def _lines(
    data: np.ndarray, headers: np.ndarray, position: tuple[int, int, int], is_reference: bool
) -> tuple[list[ReadoutLine], list[Any]]:
    """The acquired lines of one (N, S, LOC) position of a ReconBuffer, and the headers of
    readouts that were sent (``number_of_samples`` > 0) but hold only zeros."""
    n, s, loc = position
    if n >= data.shape[4] or s >= data.shape[5] or loc >= data.shape[6]:
        return [], []  # a reference buffer for fewer positions: not shared across N / S / LOC
    readout = data.shape[0]
    lines = []
    zeros = []
    for e1, e2 in np.ndindex(data.shape[1], data.shape[2]):
        samples = data[:, e1, e2, :, n, s, loc].T  # (CHA, RO)
        header = headers[e1, e2, n, s, loc]
        if header is None:
            continue
        if not np.any(samples):
            if int(header.number_of_samples) > 0:
                zeros.append(header)
            continue
        if int(header.number_of_samples) == 0:
            header = _placeholder_header(header, e1, e2)
        calibration_only = has_flag(header, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) or (
            is_reference and not has_flag(header, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        )
        lines.append(
            ReadoutLine(
                ky=int(header.idx.kspace_encode_step_1),
                samples=torch.from_numpy(np.ascontiguousarray(samples)),
                centre_sample=readout // 2,
                calibration_only=calibration_only,
                header=header,
                kz=int(header.idx.kspace_encode_step_2),
            )
        )
    return lines, zeros


def _placeholder_header(header: Any, e1: int, e2: int) -> Any:
    """A header for a buffer line whose header was left empty: its E1 / E2 position is its ky / kz."""
    filled = ismrmrd.AcquisitionHeader.from_buffer_copy(header)
    filled.idx.kspace_encode_step_1 = e1
    filled.idx.kspace_encode_step_2 = e2
    return filled
