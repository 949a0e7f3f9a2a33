"""The replay's stand-ins for the C++ gadgets in front of the Python gadget.

``pogmdm-recon`` plays the Gadgetron server's side; for a chain such as ``pogmdm_buffered.xml``
it must do what the C++ gadgets before the external node would do, then send their output:

* NoiseAdjustGadget: noise readouts -> covariance -> whitening of every later readout, scaled
  like Gadgetron's (``sqrt(2 * dwell * relative_bandwidth / noise_dwell)``); noise readouts
  are consumed;
* RemoveROOversamplingGadget: readouts cut to the recon matrix x (asymmetric echoes centred);
* AcquisitionAccumulateTriggerGadget: buckets closed when ``trigger_dimension`` changes (and at
  the end), split by ``sorting_dimension``;
* BucketToBufferGadget: one ReconData per (slice if ``split_slices``, contrast, phase,
  repetition, set) minus the ``N_dimension`` / ``S_dimension`` counters, which become the N / S
  axes of ``[RO, E1, E2, CHA, N, S, LOC]``; calibration lines go to the ``ref`` buffer, imaging
  lines (including calibration-and-imaging ones) to ``data``, each at E1 = its
  ``kspace_encode_step_1``.

This is an emulation for offline replay and tests, not a bit-exact copy of Gadgetron.

A readout a stand-in cannot handle raises :class:`EmulationError` naming the gadget and the
readout (slice, line); buckets completed before it are still handed on (a failure in slice 2
does not swallow slice 1). :func:`check_chain` finds configuration errors before any data flows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import ismrmrd
import numpy as np
import torch
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription

from gadgets.encoding import EncodingInfo
from gadgets.readout import centre_readout, remove_readout_oversampling
from gadgets.replay.chains import ChainSpec, UpstreamGadget
from gadgets.slices import has_flag, line_role, readout_line
from recon_core.physics.prewhitening import noise_covariance, whitening_matrix

COUNTERS = ("average", "slice", "contrast", "phase", "repetition", "set", "segment")


class EmulationError(ValueError):
    """A C++ gadget stand-in cannot handle a readout.

    Attributes:
        gadget: the C++ gadget's class name; acquisition: the readout, where one is to blame.
    """

    def __init__(self, gadget: str, message: str, acquisition: ismrmrd.Acquisition | None = None) -> None:
        super().__init__(f"{gadget}: {message}")
        self.gadget = gadget
        self.acquisition = acquisition


def readout_label(header: ismrmrd.AcquisitionHeader) -> str:
    """``slice 1, line 12`` (other counters where non-zero) for messages about one readout."""
    idx = header.idx
    parts = [f"slice {idx.slice}"]
    for name in ("contrast", "phase", "repetition", "set", "average"):
        if getattr(idx, name):
            parts.append(f"{name} {getattr(idx, name)}")
    parts.append(f"line {idx.kspace_encode_step_1}")
    return ", ".join(parts)


def check_chain(chain: ChainSpec) -> None:
    """Check that the chain's C++ gadgets can be performed, before any data flows.

    Raises:
        ValueError: naming the chain file and the gadget or property.
    """
    seen_accumulate = False
    for gadget in chain.upstream:
        try:
            if gadget.classname == "AcquisitionAccumulateTriggerGadget":
                seen_accumulate = True
                _counter_name(gadget.property("trigger_dimension"), "trigger_dimension")
                _counter_name(gadget.property("sorting_dimension"), "sorting_dimension")
            elif gadget.classname == "BucketToBufferGadget":
                if not seen_accumulate:
                    raise ValueError(
                        "BucketToBufferGadget needs an AcquisitionAccumulateTriggerGadget before it"
                    )
                _counter_name(gadget.property("N_dimension"), "N_dimension")
                _counter_name(gadget.property("S_dimension"), "S_dimension")
                seen_accumulate = False
            elif seen_accumulate:
                raise ValueError(
                    f"{gadget.classname} after AcquisitionAccumulateTriggerGadget is not supported"
                )
        except ValueError as error:
            raise ValueError(f"chain {chain.path}: {gadget.name}: {error}") from None
    if seen_accumulate:
        raise ValueError(
            f"chain {chain.path}: AcquisitionAccumulateTriggerGadget without BucketToBufferGadget "
            "is not supported"
        )


def emulate_chain(
    acquisitions: Iterable[ismrmrd.Acquisition], chain: ChainSpec, encoding: EncodingInfo
) -> Iterator[ismrmrd.Acquisition | ReconData]:
    """What the chain's C++ gadgets would hand the Python gadget, in stream order."""
    stream: Iterable[Any] = acquisitions
    buckets: Iterable[list[ismrmrd.Acquisition]] | None = None
    for gadget in chain.upstream:
        if gadget.classname == "NoiseAdjustGadget":
            stream = noise_adjust(stream, encoding)
        elif gadget.classname == "RemoveROOversamplingGadget":
            stream = remove_oversampling(stream, encoding)
        elif gadget.classname == "AcquisitionAccumulateTriggerGadget":
            buckets = accumulate(stream, gadget)
        elif gadget.classname == "BucketToBufferGadget":
            if buckets is None:
                raise ValueError("BucketToBufferGadget needs an AcquisitionAccumulateTriggerGadget before it")
            return (data for bucket in buckets for data in bucket_to_buffers(bucket, gadget, encoding))
        else:
            raise ValueError(f"cannot emulate {gadget.classname}")
    if buckets is not None:
        raise ValueError("AcquisitionAccumulateTriggerGadget without BucketToBufferGadget is not supported")
    return iter(stream)


def noise_adjust(
    acquisitions: Iterable[ismrmrd.Acquisition], encoding: EncodingInfo
) -> Iterator[ismrmrd.Acquisition]:
    """NoiseAdjustGadget: whiten readouts after the noise scan; drop the noise readouts."""
    noise: list[np.ndarray] = []
    noise_dwell = 0.0
    whitening: np.ndarray | None = None
    bandwidth = encoding.relative_noise_bandwidth if encoding.relative_noise_bandwidth != 1.0 else 0.793
    for acquisition in acquisitions:
        header = acquisition.getHead()
        channels = int(acquisition.active_channels)
        if has_flag(header, ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if noise and noise[0].shape[0] != channels:
                raise EmulationError(
                    "NoiseAdjustGadget",
                    f"noise readout with {channels} channels after noise readouts with {noise[0].shape[0]}",
                    acquisition,
                )
            noise.append(np.array(acquisition.data, dtype=np.complex64))
            noise_dwell = float(acquisition.sample_time_us)
            whitening = None
            continue
        if noise and whitening is None:
            covariance = noise_covariance(torch.from_numpy(np.concatenate(noise, axis=1)))
            whitening = whitening_matrix(covariance).numpy()
        if whitening is not None:
            if channels != whitening.shape[0]:
                raise EmulationError(
                    "NoiseAdjustGadget",
                    f"readout {readout_label(header)} has {channels} channels, "
                    f"the noise scan has {whitening.shape[0]}",
                    acquisition,
                )
            dwell = float(acquisition.sample_time_us)
            scale = math.sqrt(2.0 * dwell * bandwidth / noise_dwell) if dwell > 0 and noise_dwell > 0 else 1.0
            acquisition.data[:] = (scale * (whitening @ acquisition.data)).astype(np.complex64)
        yield acquisition


def remove_oversampling(
    acquisitions: Iterable[ismrmrd.Acquisition], encoding: EncodingInfo
) -> Iterator[ismrmrd.Acquisition]:
    """RemoveROOversamplingGadget: readouts cut to the recon matrix x, centre at ``x // 2``."""
    encoded_x, recon_x = encoding.encoded_matrix[0], encoding.recon_matrix[0]
    for acquisition in acquisitions:
        header = acquisition.getHead()
        if encoded_x <= recon_x or line_role(header, encoding) in ("noise", "skip"):
            yield acquisition
            continue
        try:
            line = readout_line(acquisition)
            full, _ = centre_readout(line.samples, line.centre_sample, encoded_x)
            cut = remove_readout_oversampling(full, recon_x).numpy()
        except (ValueError, RuntimeError, IndexError) as error:
            raise EmulationError(
                "RemoveROOversamplingGadget", f"readout {readout_label(header)}: {error}", acquisition
            ) from error
        header.number_of_samples = recon_x
        header.center_sample = recon_x // 2
        header.discard_pre = 0
        header.discard_post = 0
        header.trajectory_dimensions = 0
        header.flags = int(header.flags) & ~(1 << (ismrmrd.ACQ_IS_REVERSE - 1))
        yield ismrmrd.Acquisition(header, np.ascontiguousarray(cut, dtype=np.complex64))


def accumulate(
    acquisitions: Iterable[ismrmrd.Acquisition], gadget: UpstreamGadget
) -> Iterator[list[ismrmrd.Acquisition]]:
    """AcquisitionAccumulateTriggerGadget: buckets per ``trigger_dimension`` value, sorted."""
    trigger = _counter_name(gadget.property("trigger_dimension"), "trigger_dimension")
    sorting = _counter_name(gadget.property("sorting_dimension"), "sorting_dimension")
    bucket: list[ismrmrd.Acquisition] = []
    current: int | None = None
    stream = iter(acquisitions)
    while True:
        try:
            acquisition = next(stream)
        except StopIteration:
            break
        except EmulationError as error:
            # Hand on what is complete before the failing readout: the whole bucket when that
            # readout opens another one, else (sorted by slice) the slices already finished.
            failed = error.acquisition
            if bucket and failed is not None:
                if trigger and getattr(failed.idx, trigger) != current:
                    yield from _sorted_buckets(bucket, sorting)
                elif sorting == "slice":
                    yield from _finished_slices(bucket, int(failed.idx.slice))
            raise
        if has_flag(acquisition.getHead(), ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        value = getattr(acquisition.idx, trigger) if trigger else 0
        if current is not None and value != current and bucket:
            yield from _sorted_buckets(bucket, sorting)
            bucket = []
        current = value
        bucket.append(acquisition)
    if bucket:
        yield from _sorted_buckets(bucket, sorting)


def bucket_to_buffers(
    bucket: list[ismrmrd.Acquisition], gadget: UpstreamGadget, encoding: EncodingInfo
) -> list[ReconData]:
    """BucketToBufferGadget: one ReconData per buffer key of the bucket."""
    n_name = _counter_name(gadget.property("N_dimension"), "N_dimension")
    s_name = _counter_name(gadget.property("S_dimension"), "S_dimension")
    split = gadget.property("split_slices", "false").strip().lower() == "true"
    groups: dict[tuple[int, ...], list[ismrmrd.Acquisition]] = {}
    for acquisition in bucket:
        if line_role(acquisition.getHead(), encoding) in ("noise", "skip"):
            continue
        key = tuple(
            getattr(acquisition.idx, name)
            for name in ("slice", "contrast", "phase", "repetition", "set")
            if name not in (n_name, s_name) and (name != "slice" or split)
        )
        groups.setdefault(key, []).append(acquisition)
    results = []
    for group in groups.values():
        imaging = [a for a in group if not has_flag(a.getHead(), ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)]
        reference = [
            a
            for a in group
            if has_flag(a.getHead(), ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            or has_flag(a.getHead(), ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        ]
        data = _buffer(imaging or group, encoding, n_name, s_name, split)
        ref = _buffer(reference, encoding, n_name, s_name, split) if reference else None
        results.append(ReconData([ReconBit(data, ref)]))
    return results


def _buffer(
    acquisitions: list[ismrmrd.Acquisition], encoding: EncodingInfo, n_name: str, s_name: str, split: bool
) -> ReconBuffer:
    readout = int(acquisitions[0].number_of_samples)
    coils = int(acquisitions[0].active_channels)
    rows = encoding.encoded_matrix[1]
    for acquisition in acquisitions:
        if acquisition.number_of_samples != readout or acquisition.active_channels != coils:
            raise EmulationError(
                "BucketToBufferGadget",
                f"readout {readout_label(acquisition.getHead())} has {acquisition.active_channels} "
                f"channels x {acquisition.number_of_samples} samples, the first readout of its buffer "
                f"({readout_label(acquisitions[0].getHead())}) {coils} x {readout}",
                acquisition,
            )
        e1 = int(acquisition.idx.kspace_encode_step_1)
        if not 0 <= e1 < rows:
            raise EmulationError(
                "BucketToBufferGadget",
                f"readout {readout_label(acquisition.getHead())} lies outside the {rows} encoded lines",
                acquisition,
            )

    def position(acquisition: ismrmrd.Acquisition) -> tuple[int, int, int]:
        n = getattr(acquisition.idx, n_name) if n_name else 0
        s = getattr(acquisition.idx, s_name) if s_name else 0
        loc = 0 if split else acquisition.idx.slice
        return int(n), int(s), int(loc)

    positions = [position(a) for a in acquisitions]
    sizes = [max(p[axis] for p in positions) + 1 for axis in range(3)]
    data = np.zeros((readout, rows, 1, coils, *sizes), dtype=np.complex64)
    headers = np.empty((rows, 1, *sizes), dtype=object)
    for index in np.ndindex(headers.shape):
        headers[index] = ismrmrd.AcquisitionHeader()
    for acquisition, (n, s, loc) in zip(acquisitions, positions, strict=True):
        e1 = int(acquisition.idx.kspace_encode_step_1)
        data[:, e1, 0, :, n, s, loc] = acquisition.data.T
        headers[e1, 0, n, s, loc] = acquisition.getHead()
    return ReconBuffer(data, None, None, headers, _sampling(encoding, readout))


def _sampling(encoding: EncodingInfo, readout: int) -> SamplingDescription:
    description = SamplingDescription()
    ratio = readout / encoding.encoded_matrix[0]
    encoded_fov = encoding.encoded_fov_mm
    description.encoded_FOV[:] = (encoded_fov[0] * ratio, encoded_fov[1], encoded_fov[2])
    description.recon_FOV[:] = encoding.recon_fov_mm
    description.encoded_matrix[:] = (readout, encoding.encoded_matrix[1], encoding.encoded_matrix[2])
    description.recon_matrix[:] = encoding.recon_matrix
    description.sampling_limits[0].min, description.sampling_limits[0].center = 0, readout // 2
    description.sampling_limits[0].max = readout - 1
    description.sampling_limits[1].min = encoding.ky_minimum
    description.sampling_limits[1].center = encoding.ky_centre
    description.sampling_limits[1].max = encoding.ky_maximum
    return description


def _sorted_buckets(bucket: list[ismrmrd.Acquisition], sorting: str) -> Iterator[list[ismrmrd.Acquisition]]:
    if not sorting:
        yield bucket
        return
    groups: dict[int, list[ismrmrd.Acquisition]] = {}
    for acquisition in bucket:
        groups.setdefault(int(getattr(acquisition.idx, sorting)), []).append(acquisition)
    for value in sorted(groups):
        yield groups[value]


def _finished_slices(
    bucket: list[ismrmrd.Acquisition], failed_slice: int
) -> Iterator[list[ismrmrd.Acquisition]]:
    """The slices of ``bucket`` that ended (ACQ_LAST_IN_SLICE) and are not ``failed_slice``."""
    groups: dict[int, list[ismrmrd.Acquisition]] = {}
    for acquisition in bucket:
        groups.setdefault(int(acquisition.idx.slice), []).append(acquisition)
    for value in sorted(groups):
        finished = any(has_flag(a.getHead(), ismrmrd.ACQ_LAST_IN_SLICE) for a in groups[value])
        if value != failed_slice and finished:
            yield groups[value]


def _counter_name(value: str, what: str) -> str:
    name = value.strip()
    if name and name not in COUNTERS:
        raise ValueError(f"{what} {name!r} is not one of {', '.join(COUNTERS)} (or empty)")
    return name
