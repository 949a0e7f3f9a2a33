"""Nothing lost, nothing silent: every slice the scanner sent comes back as an image or as a
one-line ERROR naming it (slice, counter or property), and the other slices still come back.

Streams are small synthetic scans (16 x 16, 2 coils) edited the way broken scanners and
converters break them, sent through the gadget over a socket (connect mode) as Gadgetron would.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from gadget_helpers import read_raw, replay_acquisitions
from test_gadget_wire import ITERATIONS, PRIOR, listen_leaks_its_socket

from gadgets.assembly import SliceAssembler, check_sampling
from gadgets.demo.synthetic import SyntheticScan, header_xml, sampled_lines, write_synthetic_raw
from gadgets.encoding import encoding_from_header, parse_header
from gadgets.pogmdm_gadget import load_image_prior
from gadgets.settings import settings_from_properties
from gadgets.slices import RejectedReadoutError
from recon_core.prior.io import load_prior, save_prior
from recon_core.prior.model import PoGMDM

SCAN = SyntheticScan(matrix=16, coils=2, acceleration=2, calibration_lines=4, slices=2)
PROPERTIES: dict[str, str | None] = {"iterations": str(ITERATIONS), "device": "cpu", "prior": PRIOR}
SLICE_0 = "slice 0 contrast 0 phase 0 repetition 0 set 0"


@pytest.fixture(scope="module")
def two_slices(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_raw(tmp_path_factory.mktemp("raw") / "two_slices.h5", SCAN)


def copy(acquisition: ismrmrd.Acquisition, **counters: int) -> ismrmrd.Acquisition:
    duplicate = ismrmrd.Acquisition(acquisition.getHead(), acquisition.data.copy())
    for name, value in counters.items():
        setattr(duplicate.idx, name, value)
    return duplicate


def replay(header: bytes, acquisitions: list[ismrmrd.Acquisition], chain: str = "pogmdm") -> object:
    return replay_acquisitions(header, acquisitions, chain=chain, mode="connect", properties=PROPERTIES)


@listen_leaks_its_socket
def test_a_readout_outside_the_encoding_limits_is_an_error_and_the_other_slices_come_back(
    two_slices: Path,
) -> None:
    header, acquisitions = read_raw(two_slices)
    stray = [copy(acquisitions[5], slice=5) for _ in range(3)]
    outcome = replay(header, acquisitions[:10] + stray + acquisitions[10:])
    assert not outcome.ok and outcome.exit_code == 1
    assert [(i.slice, i.image_index) for i in outcome.images] == [(0, 1), (1, 2)]  # no "slice 5"
    first = (
        "pogmdm: readout rejected: slice 5 is outside the header's encoding limits 0..1 "
        "(readout ky 7 of slice 5 contrast 0 phase 0 repetition 0 set 0): not used"
    )
    assert outcome.errors[:2] == (first, f"pogmdm: 2 more readout(s) rejected like the first: {first[8:]}")


def test_every_counter_with_header_limits_is_checked() -> None:
    scan = dataclasses.replace(SCAN, repetitions=2)
    encoding = encoding_from_header(parse_header(header_xml(scan)))
    assert encoding.counter_limits == (
        ("kspace_encode_step_1", 0, 15),
        ("slice", 0, 1),
        ("repetition", 0, 1),
    )
    line = ismrmrd.Acquisition.from_array(np.ones((2, 32), dtype=np.complex64))
    assembler = SliceAssembler(encoding)
    for counter, value, limits in (("kspace_encode_step_1", 16, "0..15"), ("repetition", 2, "0..1")):
        with pytest.raises(RejectedReadoutError, match=f"{counter} {value} is outside .* limits {limits}"):
            assembler.add(copy(line, **{counter: value}))
    assert assembler.add(copy(line, contrast=7)) is None  # the header defines no contrast limits


@listen_leaks_its_socket
def test_a_repeated_last_readout_and_a_stray_line_are_errors_not_images(two_slices: Path) -> None:
    header, acquisitions = read_raw(two_slices)
    last = next(
        number
        for number, a in enumerate(acquisitions)
        if a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) and a.idx.slice == 0
    )
    repeated = copy(acquisitions[last])  # the same readout again, LAST_IN_SLICE and all
    stray = copy(acquisitions[1], average=1)  # one line of slice 0 left over at the end
    stream = [*acquisitions[: last + 1], repeated, *acquisitions[last + 1 :], stray]
    outcome = replay(header, stream)
    assert not outcome.ok and outcome.exit_code == 1
    assert [(i.slice, i.image_index) for i in outcome.images] == [(0, 1), (1, 2)]  # no one-line image
    assert outcome.errors[:2] == (
        f"pogmdm: {SLICE_0}: readout ky 14 kz 0 average 0 repeats a line of this slice after it was "
        "reconstructed at LAST_IN_SLICE: not used",
        f"pogmdm: {SLICE_0}: only 1 distinct phase-encode line(s) (ky 0) in 1 readout(s) of a 16-line "
        "matrix; at least 2 are needed (nominal acceleration at most 16): not reconstructed",
    )


def test_the_minimum_is_one_sixteenth_of_the_lines(two_slices: Path) -> None:
    header, acquisitions = read_raw(two_slices)
    encoding = encoding_from_header(parse_header(header))
    wide = dataclasses.replace(encoding, encoded_matrix=(32, 64, 1))  # 64 lines: at least 4
    assembler = SliceAssembler(wide)
    for ky in (6, 7, 8):
        assembler.add(copy(acquisitions[1], kspace_encode_step_1=ky))
    (data,) = assembler.flush()
    with pytest.raises(ValueError, match=r"only 3 distinct .* \(ky 6, 7, 8\) .* at least 4 are needed"):
        check_sampling(data, wide)
    check_sampling(data, encoding)  # 3 of 16 lines: enough


@listen_leaks_its_socket
@pytest.mark.filterwarnings("ignore:A builtin ctypes object gave a PEP3118:RuntimeWarning")
@pytest.mark.parametrize("chain", ["pogmdm", "pogmdm_buffered"])
def test_a_slice_of_zero_readouts_is_an_error_on_both_paths(tmp_path: Path, chain: str) -> None:
    scan = dataclasses.replace(SCAN, slices=1, repetitions=2)
    header, acquisitions = read_raw(write_synthetic_raw(tmp_path / "raw.h5", scan))
    dead = [a for a in acquisitions if a.idx.repetition == 1]
    for acquisition in dead:
        acquisition.data[:] = 0
    # The buffered chain has calibration-and-imaging readouts in both its data and ref buffers.
    both = sum(flag == ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING for _, flag in sampled_lines(scan))
    count = len(dead) + (both if chain == "pogmdm_buffered" else 0)
    outcome = replay(header, acquisitions, chain)
    assert not outcome.ok and outcome.exit_code == 1
    assert [(i.repetition, i.image_index) for i in outcome.images] == [(0, 1)]
    assert outcome.errors[0] == (
        f"pogmdm: slice 0 contrast 0 phase 0 repetition 1 set 0: all {count} readout(s) hold only "
        "zeros (no signal): nothing to reconstruct"
    )


@listen_leaks_its_socket
@pytest.mark.parametrize(
    ("noise", "reason"),
    [
        (np.nan, "the noise scan holds non-finite samples (NaN or Inf) in coil(s) [1]"),
        (0.0, "the noise scan is all zero: no receiver noise was recorded"),
    ],
)
def test_a_broken_noise_scan_is_named(two_slices: Path, noise: float, reason: str) -> None:
    header, acquisitions = read_raw(two_slices)
    scan = acquisitions[0]
    assert scan.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    if np.isnan(noise):
        scan.data[1, 3] = noise
    else:
        scan.data[:] = noise
    outcome = replay(header, acquisitions)
    assert not outcome.ok and not outcome.images
    for number, error in enumerate(outcome.errors[:2]):
        assert error == (
            f"pogmdm: slice {number} contrast 0 phase 0 repetition 0 set 0: the noise scan cannot be used "
            f"for prewhitening: {reason}"
        )


def no_prior() -> None:
    """A prior factory that forgot its return statement."""


@listen_leaks_its_socket
def test_a_prior_factory_returning_none_is_an_error_naming_the_property(two_slices: Path) -> None:
    spec = f"{__name__}:no_prior"
    with pytest.raises(ValueError, match=f"prior property '{spec}' gave NoneType, not an image prior"):
        load_image_prior(settings_from_properties({"prior": spec, "device": "cpu"}))
    header, acquisitions = read_raw(two_slices)
    outcome = replay_acquisitions(
        header, acquisitions, mode="connect", properties={**PROPERTIES, "prior": spec}
    )
    assert not outcome.ok and not outcome.images
    assert outcome.errors[0] == (
        f"pogmdm gadget cannot start: prior property '{spec}' gave NoneType, not an image prior with "
        "energy(x, sigma) and score(x, sigma)"
    )


@pytest.mark.parametrize("name", ["prior.pt", "prior.pkl", "pickled.safetensors"])
def test_pickled_weights_are_refused_as_pickles(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save(PoGMDM().state_dict(), path)
    refusal = "a pickle .*; only .safetensors PoGMDM weights are loaded, never pickles"
    with pytest.raises(ValueError, match=refusal):
        load_prior(path)
    with pytest.raises(ValueError, match=refusal):
        load_image_prior(settings_from_properties({"prior": str(path), "device": "cpu"}))
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"not a safetensors file; only \.safetensors PoGMDM weights"):
        load_prior(text)
    assert isinstance(load_prior(save_prior(PoGMDM(), tmp_path / "fine.safetensors")), PoGMDM)
