"""Raw readouts -> k-space slices: noise, oversampling, line placement, flags, grouping."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData, SamplingDescription, read_recon_data

from gadgets.assembly import SliceAssembler, assemble, assemble_slice
from gadgets.buffers import slices_from_recon_data
from gadgets.demo.synthetic import SyntheticScan, sampled_lines, write_synthetic_raw
from gadgets.encoding import EncodingInfo, encoding_from_header, parse_header
from gadgets.replay.chains import load_chain
from gadgets.replay.emulation import emulate_chain
from gadgets.replay.session import encode_item
from gadgets.slices import Partition, SliceData, SliceDataError, readout_line
from recon_core.physics.kspace import SliceIndex


def _encoding(
    readout: int = 32, recon_x: int = 16, rows: int = 16, ky_centre: int | None = None, **extra: object
) -> EncodingInfo:
    centre = rows // 2 if ky_centre is None else ky_centre
    values: dict = {
        "encoded_matrix": (readout, rows, 1),
        "recon_matrix": (recon_x, rows, 1),
        "encoded_fov_mm": (2.0 * readout, 2.0 * rows, 5.0),
        "recon_fov_mm": (2.0 * recon_x, 2.0 * rows, 5.0),
        "ky_minimum": 0,
        "ky_maximum": rows - 1,
        "ky_centre": centre,
    }
    values.update(extra)
    return EncodingInfo(**values)


def _acquisition(
    data: np.ndarray,
    ky: int = 0,
    flags: tuple[int, ...] = (),
    dwell_us: float = 5.0,
    centre: int | None = None,
    **counters: int,
) -> ismrmrd.Acquisition:
    acquisition = ismrmrd.Acquisition.from_array(np.ascontiguousarray(data, dtype=np.complex64))
    acquisition.sample_time_us = dwell_us
    acquisition.center_sample = data.shape[1] // 2 if centre is None else centre
    acquisition.idx.kspace_encode_step_1 = ky
    for name, value in counters.items():
        setattr(acquisition.idx, name, value)
    acquisition.read_dir[:] = (1.0, 0.0, 0.0)
    acquisition.phase_dir[:] = (0.0, 1.0, 0.0)
    acquisition.slice_dir[:] = (0.0, 0.0, 1.0)
    for flag in flags:
        acquisition.set_flag(flag)
    return acquisition


def _constant(value: complex, coils: int = 2, samples: int = 32) -> np.ndarray:
    return np.full((coils, samples), value, dtype=np.complex64)


def _collect(assembler: SliceAssembler, acquisitions: list[ismrmrd.Acquisition]) -> list[SliceData]:
    finished = [data for data in map(assembler.add, acquisitions) if data is not None]
    return finished + assembler.flush()


def test_noise_scan_whitens_imaging_noise_across_dwell_times() -> None:
    rng = np.random.default_rng(0)
    coils, readout, rows = 4, 64, 48
    mixing = np.eye(coils) + 0.3 * (
        rng.standard_normal((coils, coils)) + 1j * rng.standard_normal((coils, coils))
    )

    def noise(samples: int, variance: float) -> np.ndarray:
        white = rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))
        return (mixing @ white) * np.sqrt(variance / 2.0)

    # The noise scan is sampled 4x slower than the imaging readouts: 4x less noise per sample.
    scan = [_acquisition(noise(8192, 0.25), flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,), dwell_us=20.0)]
    lines = [_acquisition(noise(readout, 1.0), ky=ky, dwell_us=5.0) for ky in range(rows)]
    for bandwidth, expected in ((1.0, 1.0), (0.8, 0.8)):
        encoding = _encoding(readout, readout // 2, rows, relative_noise_bandwidth=bandwidth)
        (data,) = _collect(SliceAssembler(encoding), scan + lines)
        assembled = assemble_slice(data, encoding)
        assert assembled.kspace.prewhitened
        samples = assembled.kspace.kspace.reshape(coils, -1).to(torch.complex128)
        covariance = (samples @ samples.conj().T / samples.shape[1]).numpy()
        # White noise has the same density across the band: with a filter roll-off the noise
        # scan would see ``bandwidth`` of it, so the flat band is scaled up to 1 / bandwidth.
        assert np.allclose(covariance, expected * np.eye(coils), atol=0.12)


def test_lines_land_by_the_encoding_limits_centre() -> None:
    encoding = _encoding(rows=64, ky_centre=10, ky_maximum=40)  # partial Fourier, centre off the matrix
    acquisitions = [_acquisition(_constant(ky + 1.0), ky=ky) for ky in range(0, 41, 5)]
    (data,) = _collect(SliceAssembler(encoding), acquisitions)
    kspace = assemble_slice(data, encoding).kspace
    assert kspace.shape == (64, 16)
    assert torch.nonzero(kspace.mask.any(dim=1)).flatten().tolist() == [ky + 22 for ky in range(0, 41, 5)]
    # The centre line (ky 10) sits on grid row 64 // 2; the readout centre on column 16 // 2.
    assert torch.allclose(kspace.kspace[:, 32, 8].real, torch.full((2,), 11.0 * 2**0.5), atol=1e-4)


def test_calibration_lines_merge_and_duplicates_average() -> None:
    calibration = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)
    both = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING,)
    acquisitions = [
        _acquisition(_constant(1.0), ky=5, flags=calibration),
        _acquisition(_constant(2.0), ky=6, average=0),
        _acquisition(_constant(4.0), ky=6, average=1),
        _acquisition(_constant(8.0), ky=7, flags=both),
    ]
    encoding = _encoding(calibration_mode="embedded")
    (data,) = _collect(SliceAssembler(encoding), acquisitions)
    assembled = assemble_slice(data, encoding)
    values = assembled.kspace.kspace[0, :, 8].real / 2**0.5
    assert values[5:8].tolist() == pytest.approx([1.0, 3.0, 8.0], abs=1e-5)
    assert assembled.num_lines == 4 and assembled.num_calibration_lines == 1
    assert assembled.reference.idx.kspace_encode_step_1 == 7  # imaging line nearest the centre (8)
    separate = _encoding(calibration_mode="separate")
    assembler = SliceAssembler(separate)
    (data,) = _collect(assembler, acquisitions)
    assert [line.ky for line in data.lines] == [6, 6, 7]
    assert sum(assembler.skipped.values()) == 1


def test_navigator_phase_correction_and_other_space_readouts_are_skipped() -> None:
    encoding = _encoding()
    assembler = SliceAssembler(encoding)
    other_space = _acquisition(_constant(9.0), ky=3)
    other_space.encoding_space_ref = 1
    acquisitions = [
        _acquisition(_constant(9.0), ky=2, flags=(ismrmrd.ACQ_IS_NAVIGATION_DATA,)),
        _acquisition(_constant(9.0), ky=2, flags=(ismrmrd.ACQ_IS_PHASECORR_DATA,)),
        other_space,
        _acquisition(_constant(1.0), ky=8),
    ]
    (data,) = _collect(assembler, acquisitions)
    assert [line.ky for line in data.lines] == [8]
    assert assembler.skipped == {
        "ACQ_IS_NAVIGATION_DATA": 1,
        "ACQ_IS_PHASECORR_DATA": 1,
        "encoding space 1": 1,
    }


def test_slices_close_at_last_in_slice_and_leftovers_flush() -> None:
    last = (ismrmrd.ACQ_LAST_IN_SLICE,)
    assembler = SliceAssembler(_encoding())
    results = [
        assembler.add(_acquisition(_constant(1.0), ky=1, slice=0)),
        assembler.add(_acquisition(_constant(1.0), ky=1, slice=1)),
        assembler.add(_acquisition(_constant(1.0), ky=2, slice=0, flags=last)),
        assembler.add(_acquisition(_constant(1.0), ky=1, slice=0, repetition=1)),
    ]
    assert results[:2] == [None, None] and results[3] is None
    finished = results[2]
    assert finished is not None and finished.index == SliceIndex(slice=0)
    assert [line.ky for line in finished.lines] == [1, 2]
    leftovers = assembler.flush()
    assert [data.index for data in leftovers] == [SliceIndex(slice=1), SliceIndex(slice=0, repetition=1)]
    assert assembler.flush() == []


def test_asymmetric_echo_and_reversed_readouts() -> None:
    encoding = _encoding(readout=32, recon_x=32)
    samples = np.arange(1, 25, dtype=np.complex64)[None].repeat(2, axis=0)  # 24 of 32 samples
    partial = readout_line(_acquisition(samples, ky=8, centre=8))
    assert partial.centre_sample == 8
    reversed_line = readout_line(_acquisition(samples, ky=8, centre=15, flags=(ismrmrd.ACQ_IS_REVERSE,)))
    assert reversed_line.samples[0, 0] == 24 and reversed_line.centre_sample == 8
    (data,) = _collect(SliceAssembler(encoding), [_acquisition(samples, ky=8, centre=8)])
    kspace = assemble_slice(data, encoding).kspace
    assert kspace.mask[8].tolist() == [False] * 8 + [True] * 24
    assert complex(kspace.kspace[0, 8, 16]) == pytest.approx(9.0)  # sample 8 -> column 32 // 2


def test_assembly_errors_name_the_slice() -> None:
    encoding = _encoding(rows=16)
    (data,) = _collect(SliceAssembler(encoding), [_acquisition(_constant(1.0), ky=20, repetition=3)])
    with pytest.raises(ValueError, match=r"repetition 3 .*rows \[20\] fall outside the 16-row grid"):
        assemble_slice(data, encoding)
    mixed = [_acquisition(_constant(1.0, coils=2), ky=1), _acquisition(_constant(1.0, coils=3), ky=2)]
    (data,) = _collect(SliceAssembler(encoding), mixed)
    with pytest.raises(ValueError, match=r"different coil counts \[2, 3\]"):
        assemble_slice(data, encoding)
    noise = _acquisition(_constant(1.0, coils=3, samples=64), flags=(ismrmrd.ACQ_IS_NOISE_MEASUREMENT,))
    (data,) = _collect(SliceAssembler(encoding), [noise, _acquisition(_constant(1.0), ky=1)])
    with pytest.raises(ValueError, match="the noise scan has 3 coils, the data 2"):
        assemble_slice(data, encoding)


def _read_file(path: Path) -> tuple[EncodingInfo, list[ismrmrd.Acquisition]]:
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dataset:
        encoding = encoding_from_header(parse_header(dataset.read_xml_header()))
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    return encoding, acquisitions


def _peak(kspace: torch.Tensor) -> tuple[int, int]:
    energy = kspace.abs().pow(2).sum(dim=0)
    row, column = divmod(int(energy.argmax()), energy.shape[1])
    return row, column


def _assert_near(peak: tuple[int, int], centre: tuple[int, int]) -> None:
    """The energy peak of real k-space sits within a sample of the nominal centre."""
    assert abs(peak[0] - centre[0]) <= 1 and abs(peak[1] - centre[1]) <= 1, (peak, centre)


def test_real_scanner_file_with_off_centre_ky(shared_data: Path) -> None:
    encoding, acquisitions = _read_file(shared_data / "nih_phantom14ch" / "raw_R3.h5")
    assert encoding.ky_offset == 72 - 54
    (data,) = _collect(SliceAssembler(encoding), acquisitions)
    assembled = assemble_slice(data, encoding)
    kspace = assembled.kspace
    assert kspace.kspace.shape == (14, 144, 192) and kspace.prewhitened
    assert (assembled.num_lines, assembled.num_calibration_lines) == (68, 32)
    _assert_near(_peak(kspace.kspace), (72, 96))  # the k-space centre lands on the grid centre
    assert int(kspace.mask.any(dim=1).sum()) == 68
    assert not bool(kspace.mask[124:].any())  # partial Fourier: the top of k-space stays empty


def test_berkeley_file_without_noise_scan(shared_data: Path) -> None:
    encoding, acquisitions = _read_file(shared_data / "berkeley_brain8ch" / "raw_R4_acs24.h5")
    (data,) = _collect(SliceAssembler(encoding), acquisitions)
    assembled = assemble_slice(data, encoding)
    assert not assembled.kspace.prewhitened and assembled.kspace.noise_covariance is None
    assert (assembled.num_lines, assembled.num_calibration_lines) == (63, 18)
    assert assembled.kspace.kspace.shape == (8, 180, 230)
    _assert_near(_peak(assembled.kspace.kspace), (90, 115))


@pytest.mark.filterwarnings("ignore:A builtin ctypes object gave a PEP3118:RuntimeWarning")
def test_buffered_path_matches_the_raw_path(tmp_path: Path) -> None:
    scan = SyntheticScan(matrix=32, coils=4, acceleration=2, calibration_lines=8, slices=2, repetitions=2)
    encoding, acquisitions = _read_file(write_synthetic_raw(tmp_path / "raw.h5", scan))
    raw = {
        data.index: assemble_slice(data, encoding)
        for data in _collect(SliceAssembler(encoding), acquisitions)
    }
    both = sum(flag == ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING for _, flag in sampled_lines(scan))
    chain = load_chain("pogmdm_buffered")
    received = []
    for item in emulate_chain(iter(acquisitions), chain, encoding):
        wire = io.BytesIO(encode_item(item)[2:])  # through the wire format and gadgetron's reader
        received.extend(slices_from_recon_data(read_recon_data(wire), encoding))
    assert {data.index for data in received} == set(raw) and len(received) == len(raw)
    # The emulated NoiseAdjustGadget scales the whitened data by sqrt(2 * 0.793) (Gadgetron's
    # default bandwidth); otherwise both paths give the same k-space.
    for data in received:
        buffered = assemble_slice(data, encoding)
        reference = raw[data.index]
        assert torch.equal(buffered.kspace.mask, reference.kspace.mask)
        assert not buffered.kspace.prewhitened
        expected = reference.kspace.kspace * (2 * 0.793) ** 0.5
        assert torch.allclose(buffered.kspace.kspace, expected, atol=1e-3 * float(expected.abs().max()))
        # Calibration-and-imaging lines arrive twice (data and ref buffers) and are averaged.
        assert buffered.num_lines == reference.num_lines + both


def _buffer(rows: dict[int, tuple[int, ...]], readout: int = 16) -> ReconBuffer:
    """A ReconBuffer ``[RO, E1=8, 1, CHA=2, 1, 1, 1]`` with lines at ``rows`` (ky -> flags)."""
    data = np.zeros((readout, 8, 1, 2, 1, 1, 1), dtype=np.complex64)
    headers = np.empty((8, 1, 1, 1, 1), dtype=object)
    for index in np.ndindex(headers.shape):
        headers[index] = ismrmrd.AcquisitionHeader()
    for ky, flags in rows.items():
        data[:, ky] = ky + 1.0
        header = ismrmrd.AcquisitionHeader()
        header.number_of_samples, header.active_channels = readout, 2
        header.idx.kspace_encode_step_1, header.idx.repetition = ky, 4
        for flag in flags:
            header.flags |= 1 << (flag - 1)
        headers[ky, 0, 0, 0, 0] = header
    return ReconBuffer(data, None, None, headers, SamplingDescription())


def test_recon_data_lines_merge_reference_and_drop_navigators() -> None:
    encoding = _encoding(readout=32, recon_x=16, rows=8)
    data = _buffer(
        {2: (), 3: (ismrmrd.ACQ_IS_NAVIGATION_DATA,), 4: (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING,)}
    )
    reference = _buffer(
        {4: (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING,), 5: (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION,)}
    )
    (slice_data,) = slices_from_recon_data(ReconData([ReconBit(data, reference)]), encoding)
    assert slice_data.index == SliceIndex(repetition=4)
    assert slice_data.line_length == 16
    assert [(line.ky, line.calibration_only) for line in slice_data.lines] == [
        (2, False),
        (4, False),
        (4, False),
        (5, True),
    ]
    kspace = assemble_slice(slice_data, encoding).kspace
    assert kspace.mask.any(dim=1).tolist() == [False, False, True, False, True, True, False, False]


def _slab_buffer(value: float = 1.0) -> ReconBuffer:
    """A 3D ReconBuffer ``[RO=16, E1=8, E2=2, CHA=2, 1, 1, 1]``: ky 2..5 at both kz, headers set."""
    data = np.zeros((16, 8, 2, 2, 1, 1, 1), dtype=np.complex64)
    headers = np.empty((8, 2, 1, 1, 1), dtype=object)
    for e1, e2 in np.ndindex(8, 2):
        header = ismrmrd.AcquisitionHeader()
        if 2 <= e1 <= 5:
            data[:, e1, e2] = value * (e2 + 1)
            header.number_of_samples, header.active_channels = 16, 2
            header.idx.kspace_encode_step_1, header.idx.kspace_encode_step_2 = e1, e2
            header.idx.slice = 3
        headers[e1, e2, 0, 0, 0] = header
    return ReconBuffer(data, None, None, headers, SamplingDescription())


def test_recon_data_3d_buffers_keep_their_partitions() -> None:
    encoding = _encoding(readout=16, recon_x=16, rows=8, encoded_matrix=(16, 8, 2), kz_centre=1)
    encoding = dataclasses.replace(
        encoding, encoded_fov_mm=(32.0, 16.0, 10.0), recon_matrix=(16, 8, 2), recon_fov_mm=(32.0, 16.0, 10.0)
    )
    (slice_data,) = slices_from_recon_data(ReconData([ReconBit(_slab_buffer(), None)]), encoding)
    assert slice_data.index == SliceIndex(slice=3)
    assert sorted((line.ky, line.kz) for line in slice_data.lines) == [
        (ky, kz) for ky in range(2, 6) for kz in (0, 1)
    ]
    first, second = assemble(slice_data, encoding)
    assert (first.partition, second.partition) == (Partition(0, 2, -5.0, 5.0), Partition(1, 2, 0.0, 5.0))
    # kz planes hold 1 and 2 (centre at plane 1): partition 0 = (2 - 1) / sqrt 2, 1 = (2 + 1) / sqrt 2.
    centre = (slice(None), 4, 8)
    assert torch.allclose(first.kspace.kspace[centre].real, torch.full((2,), 2**-0.5), atol=1e-5)
    assert torch.allclose(second.kspace.kspace[centre].real, torch.full((2,), 3 * 2**-0.5), atol=1e-5)


def test_recon_data_slice_of_zero_readouts_is_reported_and_an_empty_position_skipped() -> None:
    encoding = _encoding(readout=16, recon_x=16, rows=8, encoded_matrix=(16, 8, 2), kz_centre=1)
    (zeros,) = slices_from_recon_data(ReconData([ReconBit(_slab_buffer(0.0), None)]), encoding)
    assert zeros.index == SliceIndex(slice=3) and zeros.lines == () and zeros.zero_readouts == 8
    with pytest.raises(
        SliceDataError, match=r"^slice 3 .* set 0: all 8 readout\(s\) hold only zeros \(no signal\)"
    ):
        assemble(zeros, encoding)
    empty = _buffer({})  # a position BucketToBuffer sized but nothing was sent to
    assert slices_from_recon_data(ReconData([ReconBit(empty, None)]), _encoding(rows=8)) == []
    # The raw path says the same for a slice whose readouts are all zero.
    (data,) = _collect(SliceAssembler(_encoding()), [_acquisition(_constant(0.0), ky=ky) for ky in (3, 4)])
    with pytest.raises(SliceDataError, match=r"set 0: all 2 readout\(s\) hold only zeros"):
        assemble(data, _encoding())
