"""Reading an ISMRMRD raw file for the replay: header, expected reconstructions, acquisitions.

The raw file is only read (HDF5 mode ``r``). Every failure names the file and, where one is
to blame, the acquisition: ``ValueError`` before the session starts, :class:`InputError` while
the acquisitions are being sent.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import ismrmrd
import numpy as np

from gadgets.encoding import EncodingInfo, encoding_from_header, parse_header
from gadgets.replay.emulation import readout_label
from gadgets.replay.session import InputError
from gadgets.slices import line_role

#: The counters that tell one reconstruction from another (one image per series each).
RECON_COUNTERS = ("slice", "contrast", "phase", "repetition", "set")


#: Acquisitions read from the raw file at a time.
READ_BLOCK = 256


ReconKey = tuple[int, int, int, int, int]


def read_raw_summary(raw: Path, dataset: str) -> tuple[bytes, EncodingInfo, tuple[ReconKey, ...]]:
    """The XML header, what it says, and the reconstructions the readouts call for (read-only).

    Raises:
        ValueError: ``cannot read raw file X: ...`` naming what is wrong.
    """
    if not h5py.is_hdf5(raw):
        raise ValueError(f"cannot read raw file {raw}: not an HDF5 file")
    try:
        with h5py.File(raw, "r") as handle:
            group = handle.get(dataset)
            if not isinstance(group, h5py.Group) or "xml" not in group or "data" not in group:
                raise ValueError(f"raw file {raw} has no ISMRMRD raw data in /{dataset} (xml and data)")
            header_xml = bytes(group["xml"][0])
            headers = group["data"]["head"]
    except OSError as error:
        raise ValueError(f"cannot read raw file {raw}: {h5_reason(error)}") from None
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"cannot read raw file {raw}: /{dataset} is not ISMRMRD raw data ({error})"
        ) from None
    try:
        encoding = encoding_from_header(parse_header(header_xml))
    except Exception as error:  # the XML parser's many exception types
        raise ValueError(f"raw file {raw}: bad ISMRMRD XML header: {type(error).__name__}: {error}") from None
    keys: set[ReconKey] = set()
    for number, raw_header in enumerate(headers):
        try:
            header = _acquisition_header(raw_header)
        except ValueError as error:
            raise ValueError(f"raw file {raw}: acquisition {number}: {error}") from None
        if line_role(header, encoding) in ("image", "calibration"):
            keys.add(tuple(int(getattr(header.idx, name)) for name in RECON_COUNTERS))  # type: ignore[arg-type]
    return header_xml, encoding, tuple(sorted(keys))


def count_reconstructions(headers: np.ndarray, encoding: EncodingInfo) -> int:
    """Distinct (slice, contrast, phase, repetition, set) among the imaging readouts."""
    keys = set()
    for raw_header in headers:
        header = _acquisition_header(raw_header)
        if line_role(header, encoding) in ("image", "calibration"):
            keys.add(tuple(int(getattr(header.idx, name)) for name in RECON_COUNTERS))
    return len(keys)


def _acquisition_header(record: Any) -> ismrmrd.AcquisitionHeader:
    data = np.ascontiguousarray(record).tobytes()
    size = ctypes.sizeof(ismrmrd.AcquisitionHeader)
    if len(data) != size:
        raise ValueError(f"its header record has {len(data)} bytes, an ISMRMRD acquisition header {size}")
    return ismrmrd.AcquisitionHeader.from_buffer_copy(data)


def read_acquisitions(data: h5py.Dataset, raw: Path) -> Iterator[ismrmrd.Acquisition]:
    """The acquisitions of an open ``/dataset/data`` (read in blocks), checked against their headers.

    Raises:
        InputError: naming the file and the acquisition whose data do not fit its header.
    """
    for start in range(0, int(data.shape[0]), READ_BLOCK):
        try:
            records = data[start : start + READ_BLOCK]
        except (OSError, ValueError, TypeError) as error:
            raise InputError(
                f"cannot read raw file {raw}: acquisitions {start} to {start + READ_BLOCK - 1}: {error}"
            ) from None
        for offset, record in enumerate(records):
            yield acquisition_from_record(record, raw, start + offset)


def acquisition_from_record(record: Any, raw: Path | str, number: int) -> ismrmrd.Acquisition:
    """An ``ismrmrd.Acquisition`` from one record of ``/dataset/data`` (head, traj, data).

    Raises:
        InputError: when the sample data or trajectory do not match the header's sizes.
    """
    try:
        header = _acquisition_header(record["head"])
    except ValueError as error:
        raise InputError(f"bad raw file {raw}: acquisition {number}: {error}") from None
    samples, channels = int(header.number_of_samples), int(header.active_channels)
    dimensions = int(header.trajectory_dimensions)
    values = np.asarray(record["data"], dtype=np.float32)
    if values.size != 2 * samples * channels:
        raise InputError(
            f"bad raw file {raw}: acquisition {number} ({readout_label(header)}): its header says "
            f"{channels} channel(s) x {samples} samples, its data hold {values.size / 2:g} complex values"
        )
    trajectory = np.asarray(record["traj"], dtype=np.float32)
    if trajectory.size != samples * dimensions:
        raise InputError(
            f"bad raw file {raw}: acquisition {number} ({readout_label(header)}): its header says "
            f"{samples} samples x {dimensions} trajectory dimension(s), its trajectory holds "
            f"{trajectory.size} values"
        )
    return ismrmrd.Acquisition(
        header,
        values.view(np.complex64).reshape(channels, samples).copy(),
        trajectory.reshape(samples, dimensions).copy(),
    )


def h5_reason(error: OSError) -> str:
    text = str(error)
    if "unable to lock file" in text:
        return "it is locked by another process (open for writing elsewhere?)"
    if "file signature not found" in text:
        return "not an HDF5 file"
    if "Permission denied" in text or "errno = 13" in text:
        return "permission denied"
    match = re.search(r"error message = '([^']*)'", text)  # HDF5's wordy errors: the system's words
    return match.group(1) if match else text
