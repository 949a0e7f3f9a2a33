"""The gadget over real sockets with the real ``gadgetron`` package and the real reconstruction.

Started the way Gadgetron starts it (``python -m gadgetron PORT MODULE TARGET``, execute mode) and
served by ``gadgetron.external.listen`` (connect mode); fed with raw files from Debian's
``ismrmrd_generate_cartesian_shepp_logan`` (header version 8, noise readout, 2x readout
oversampling), the package's synthetic writer (header version 2) and the real scanner files in
``../shared/data``. The image prior is the small analytic ``SmoothTVPrior`` of
``tests/helpers/smooth_prior.py`` (named by the gadget's ``prior`` property), so the quality bounds hold
whatever trained weights ship; the shipped prior's own path is checked separately. Few MAP
iterations and one CPU thread keep every run short.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from gadget_helpers import generator_available, read_raw, replay_acquisitions, shepp_logan_raw

from gadgets.assembly import SliceAssembler, assemble_slice
from gadgets.demo.synthetic import SyntheticScan, header_xml, write_synthetic_raw
from gadgets.encoding import encoding_from_header, parse_header
from gadgets.pogmdm_gadget import run_gadget
from gadgets.replay.session import SessionError, SessionOutcome, run_session
from recon_core.physics.operators import FFT2Operator
from recon_core.prior.io import default_weights_path

ITERATIONS = 20
PRIOR = "smooth_prior:SmoothTVPrior"
HERE = Path(__file__).resolve().parent
HELPERS = HERE.parent / "helpers"
#: The gadget child processes import this module's targets, the helpers and the project.
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONPATH": os.pathsep.join([str(HERE), str(HELPERS), str(HERE.parents[1])]),
}

# gadgetron 1.4.1's listen() never closes its listening socket (a ResourceWarning when it is freed).
listen_leaks_its_socket = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

needs_generator = pytest.mark.skipif(
    not generator_available(), reason="Debian's ismrmrd_generate_cartesian_shepp_logan is not installed"
)


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Debian generator files: fully sampled, and R = 3 with 20 calibration lines (3 repetitions)."""
    if not generator_available():
        pytest.skip("Debian's ismrmrd_generate_cartesian_shepp_logan is not installed")
    folder = tmp_path_factory.mktemp("raw")
    common = {"matrix": 64, "coils": 4, "noise_level": 0.005}
    return {
        "full": shepp_logan_raw(folder / "full.h5", acceleration=1, **common),
        "r3": shepp_logan_raw(folder / "r3.h5", acceleration=3, calibration_width=20, **common),
    }


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def replay(
    raw: Path,
    chain: str = "pogmdm",
    mode: str = "execute",
    properties: dict[str, str | None] | None = None,
    module: str | None = None,
    target: str | None = None,
) -> tuple[SessionOutcome, list[ismrmrd.Acquisition]]:
    """Send ``raw`` through ``chain``'s gadget over a socket, as Gadgetron would."""
    values: dict[str, str | None] = {"iterations": str(ITERATIONS), "device": "cpu", "prior": PRIOR}
    values.update(properties or {})
    header, acquisitions = read_raw(raw)
    outcome = replay_acquisitions(
        header, acquisitions, chain, mode, values, module=module, target=target, env=CHILD_ENV
    )
    return outcome, acquisitions


def rss_reference(raw: Path, recon_x: int) -> np.ndarray:
    """A plain reconstruction of fully sampled data: centred inverse FFTs and root sum of squares."""
    with ismrmrd.Dataset(str(raw), "dataset", create_if_needed=False) as dataset:
        lines = {}
        for i in range(dataset.number_of_acquisitions()):
            acquisition = dataset.read_acquisition(i)
            if not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                lines[acquisition.idx.kspace_encode_step_1] = acquisition.data
    kspace = np.stack([lines[ky] for ky in sorted(lines)], axis=1)  # (C, ky, x)

    def centred_ifft(x: np.ndarray, axis: int) -> np.ndarray:
        return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(x, axes=axis), axis=axis), axes=axis)

    image = centred_ifft(centred_ifft(kspace, 2), 1)
    start = image.shape[2] // 2 - recon_x // 2
    image = image[:, :, start : start + recon_x]
    return np.sqrt((np.abs(image) ** 2).sum(axis=0))


def normalised_error(image: np.ndarray, reference: np.ndarray) -> float:
    """``||ref - a x|| / ||ref||`` with the least-squares scale ``a`` (units differ after whitening)."""
    scale = float((image * reference).sum() / (image * image).sum())
    return float(np.linalg.norm(reference - scale * image) / np.linalg.norm(reference))


def pixels(image: ismrmrd.Image) -> np.ndarray:
    return np.asarray(image.data[0, 0], dtype=np.float64)


def assert_geometry_copied(image: ismrmrd.Image, acquisition: ismrmrd.Acquisition) -> None:
    for name in ("position", "read_dir", "phase_dir", "slice_dir", "patient_table_position"):
        assert tuple(getattr(image, name)) == pytest.approx(tuple(getattr(acquisition, name))), name
    assert image.measurement_uid == acquisition.measurement_uid


@needs_generator
def test_assembled_kspace_matches_the_plain_reconstruction(raw_files: dict[str, Path]) -> None:
    """Prior-free check of the front end: whitening, oversampling removal and line placement.

    The bound leaves room for the coil mixing of the (sample-covariance) whitening; a flipped,
    shifted or wrongly cropped image is off by far more.
    """
    with ismrmrd.Dataset(str(raw_files["full"]), "dataset", create_if_needed=False) as dataset:
        encoding = encoding_from_header(parse_header(dataset.read_xml_header()))
        assembler = SliceAssembler(encoding)
        finished = [
            assembler.add(dataset.read_acquisition(i)) for i in range(dataset.number_of_acquisitions())
        ]
    (data,) = [item for item in finished if item is not None] + assembler.flush()
    kspace = assemble_slice(data, encoding).kspace
    coil_images = FFT2Operator().adjoint(kspace.kspace)
    zero_filled = coil_images.abs().pow(2).sum(dim=0).sqrt().numpy()
    assert normalised_error(zero_filled, rss_reference(raw_files["full"], 64)) < 0.05


@needs_generator
def test_execute_mode_fully_sampled_matches_the_plain_reconstruction(raw_files: dict[str, Path]) -> None:
    outcome, acquisitions = replay(raw_files["full"])
    assert outcome.ok, outcome.errors
    assert outcome.exit_code == 0 and outcome.closed
    assert outcome.sent == len(acquisitions)
    (image,) = outcome.images
    assert (image.image_series_index, image.image_index) == (1, 1)
    assert tuple(image.matrix_size) == (64, 64, 1)
    assert tuple(image.field_of_view) == pytest.approx((300.0, 300.0, 6.0))
    assert image.data.dtype == np.float32 and np.isfinite(image.data).all()
    assert_geometry_copied(image, acquisitions[1])
    assert normalised_error(pixels(image), rss_reference(raw_files["full"], 64)) < 0.08


@needs_generator
def test_execute_mode_r3_with_an_old_header_version(raw_files: dict[str, Path]) -> None:
    with ismrmrd.Dataset(str(raw_files["r3"]), "dataset", create_if_needed=False) as dataset:
        assert parse_header(dataset.read_xml_header()).version == 8  # ISMRMRD 1.8's writer
    outcome, _ = replay(raw_files["r3"])
    assert outcome.ok, outcome.errors
    # -a 3 spreads the ky lines over 3 repetitions of one slice: one image each.
    indices = [(i.image_series_index, i.image_index, i.repetition) for i in outcome.images]
    assert indices == [(1, 1, 0), (1, 2, 1), (1, 3, 2)]
    reference = rss_reference(raw_files["full"], 64)
    for image in outcome.images:
        assert np.isfinite(image.data).all()
        assert normalised_error(pixels(image), reference) < 0.1


@listen_leaks_its_socket
def test_connect_mode_current_header_and_variance_series(tmp_path: Path) -> None:
    scan = SyntheticScan(matrix=32, coils=4, acceleration=2, calibration_lines=8, slices=2)
    raw = write_synthetic_raw(tmp_path / "synthetic.h5", scan)
    with ismrmrd.Dataset(str(raw), "dataset", create_if_needed=False) as dataset:
        assert parse_header(dataset.read_xml_header()).version == 2  # the current schema version
    properties = {"chains": "2", "levels": "3", "steps": "1"}
    outcome, acquisitions = replay(raw, chain="pogmdm_variance", mode="connect", properties=properties)
    assert outcome.ok, outcome.errors
    series = sorted((i.image_series_index, i.image_index, i.slice) for i in outcome.images)
    assert series == [(1, 1, 0), (1, 2, 1), (2, 1, 0), (2, 2, 1)]
    for image in outcome.images:
        assert tuple(image.matrix_size) == (32, 32, 1)
        assert np.isfinite(image.data).all() and float(image.data.min()) >= 0.0
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert meta["PogmdmOutput"] == ("image" if image.image_series_index == 1 else "std")
    slice_one = next(a for a in acquisitions if a.idx.slice == 1)
    assert_geometry_copied(next(i for i in outcome.images if i.slice == 1), slice_one)


def test_buffered_chain_in_execute_mode(tmp_path: Path) -> None:
    scan = SyntheticScan(matrix=32, coils=4, acceleration=2, calibration_lines=8, repetitions=2)
    raw = write_synthetic_raw(tmp_path / "synthetic.h5", scan)
    outcome, acquisitions = replay(raw, chain="pogmdm_buffered")
    assert outcome.ok, outcome.errors
    assert [(i.image_series_index, i.image_index, i.repetition) for i in outcome.images] == [
        (1, 1, 0),
        (1, 2, 1),
    ]
    for image in outcome.images:
        assert np.isfinite(image.data).all() and tuple(image.matrix_size) == (32, 32, 1)
        assert_geometry_copied(image, acquisitions[1])


@listen_leaks_its_socket
def test_real_scanner_file_in_connect_mode(shared_data: Path) -> None:
    outcome, acquisitions = replay(shared_data / "nih_phantom14ch" / "raw_R3.h5", mode="connect")
    assert outcome.ok, outcome.errors
    (image,) = outcome.images
    assert tuple(image.matrix_size) == (192, 144, 1)
    assert tuple(image.field_of_view) == pytest.approx((280.0, 210.0, 8.0))
    centre_line = next(a for a in acquisitions if a.idx.kspace_encode_step_1 == 54)
    assert_geometry_copied(image, centre_line)
    assert image.acquisition_time_stamp == centre_line.acquisition_time_stamp
    assert np.isfinite(image.data).all() and float(image.data.max()) > 0.0


def test_berkeley_r4_agrees_with_the_fully_sampled_reference(shared_data: Path) -> None:
    folder = shared_data / "berkeley_brain8ch"
    outcome, _ = replay(folder / "raw_R4_acs24.h5")
    assert outcome.ok, outcome.errors
    (image,) = outcome.images
    assert tuple(image.matrix_size) == (230, 180, 1)
    assert normalised_error(pixels(image), rss_reference(folder / "raw_full.h5", 230)) < 0.15


def test_the_default_prior_path(tmp_path: Path) -> None:
    """Without a ``prior`` property the gadget loads the shipped weights, or says they are missing."""
    raw = write_synthetic_raw(tmp_path / "synthetic.h5", SyntheticScan(matrix=16, coils=2))
    outcome, _ = replay(raw, properties={"prior": None, "iterations": "2"})
    if default_weights_path().is_file():
        assert outcome.ok, outcome.errors
        assert len(outcome.images) == 1
    else:
        assert not outcome.ok and outcome.exit_code != 0 and not outcome.images
        assert any("cannot start" in error and "weights missing" in error for error in outcome.errors)


def failing_reconstruction(*args: object, **kwargs: object) -> object:
    raise RuntimeError("simulated solver failure")


def failing_target(connection: object) -> None:
    """A gadget whose reconstruction always fails (served in connect mode)."""
    run_gadget(connection, "acquisitions", reconstruct=failing_reconstruction)


@listen_leaks_its_socket
def test_failures_are_reported_and_exit_non_zero(tmp_path: Path) -> None:
    raw = write_synthetic_raw(tmp_path / "synthetic.h5", SyntheticScan(matrix=16, coils=2, slices=2))
    outcome, _ = replay(raw, mode="connect", module=__name__, target="failing_target")
    assert not outcome.ok and outcome.exit_code == 1 and not outcome.images
    assert any("slice 0" in error and "simulated solver failure" in error for error in outcome.errors)
    assert any("slice 1" in error for error in outcome.errors)
    bad, _ = replay(raw, properties={"num_chain": "2"})
    assert not bad.ok and bad.exit_code != 0 and not bad.images
    assert any("unknown property 'num_chain'" in error for error in bad.errors)


def sleeping_target(connection: object) -> None:
    """A gadget that hangs (never answers)."""
    time.sleep(120)


def test_a_hanging_gadget_times_out_and_is_stopped() -> None:
    start = time.monotonic()
    with pytest.raises(SessionError, match="timed out"):
        run_session(
            "test_gadget_wire",
            "sleeping_target",
            "<configuration/>",
            header_xml(SyntheticScan()).encode(),
            [],
            mode="execute",
            timeout=10.0,
            env=CHILD_ENV,
        )
    assert time.monotonic() - start < 60.0
