"""``pogmdm-recon`` when things go wrong: nothing received is lost, nothing fails silently.

Real processes and sockets throughout: the gadget is a child ``python -m gadgetron`` running a
small misbehaving target from :mod:`tests.helpers.fault_gadgets` (no torch, about a second to start);
the runs that need signals or an uncaught-exception check run ``pogmdm-recon`` itself as a
subprocess. Each case checks the exit status, that the LAST stderr line names what was written,
why the run fell short and which slices were lost, and that every received image was written.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest
from replay_runs import (
    BUFFERED_CHAIN,
    SCAN,
    Cli,
    child_pids,
    fault_chain,
    image_slices,
    last_line,
    process_gone,
)

from gadgets.demo.synthetic import SyntheticScan, write_synthetic_raw
from gadgets.replay import main

# 1. The gadget dies or times out: what arrived is written, the last line says what was lost.


def test_a_killed_gadget_keeps_the_images_already_received(raw3: Path, tmp_path: Path) -> None:
    chain = fault_chain(tmp_path, "die_after_first_image")
    output = tmp_path / "out.h5"
    cli = Cli([str(raw3), "-c", str(chain), "-o", str(output), "-G", "g", "--timeout", "60"], tmp_path)
    try:
        status, stderr = cli.finish()
    finally:
        cli.close()
    assert status == 1, stderr
    assert "Traceback" not in stderr
    assert last_line(stderr) == (
        f"pogmdm-recon: wrote 1 of 3 images to {output} (group g); "
        "the gadget process died (signal 9, SIGKILL) after image 1; slices 1, 2 lost"
    )
    assert image_slices(output, "g") == [0]


def test_a_timeout_keeps_the_images_already_received(
    raw3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chain = fault_chain(tmp_path, "hang_after_first_image")
    output = tmp_path / "out.h5"
    start = time.monotonic()
    status = main([str(raw3), "-c", str(chain), "-o", str(output), "-G", "g", "--timeout", "6"])
    assert time.monotonic() - start < 30.0
    assert status == 1
    assert last_line(capsys.readouterr().err) == (
        f"pogmdm-recon: wrote 1 of 3 images to {output} (group g); "
        "timed out after 6 s waiting for the gadget after image 1; slices 1, 2 lost"
    )
    assert image_slices(output, "g") == [0]


# 7. SIGTERM / SIGINT: the gadget child is stopped, the images are written, 143 / 130.


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_the_gadget_and_keeps_the_images(
    raw3: Path, tmp_path: Path, signum: signal.Signals, status: int
) -> None:
    chain = fault_chain(tmp_path, "hang_after_first_image")
    output = tmp_path / "out.h5"
    cli = Cli([str(raw3), "-c", str(chain), "-o", str(output), "-G", "g"], tmp_path)
    children: list[int] = []
    try:
        cli.wait_for("received image")
        children = child_pids(cli.process.pid)
        assert len(children) == 1, children  # the gadget
        cli.process.send_signal(signum)
        code, stderr = cli.finish(limit=30.0)
        gone = process_gone(children[0], 5.0)
    finally:
        cli.close()
        for child in children:
            if not process_gone(child, 0.0):
                os.kill(child, signal.SIGKILL)  # the gadget this test started, left orphaned
    assert gone, f"the gadget process {children[0]} outlived pogmdm-recon"
    assert code == status, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert last_line(stderr) == (
        f"pogmdm-recon: wrote 1 of 3 images to {output} (group g); "
        f"interrupted by {signum.name} after image 1; slices 1, 2 lost"
    )
    assert image_slices(output, "g") == [0]


# 3. The replay side cannot send: the session ends at once, the input is blamed, images kept.


def test_a_bad_readout_in_the_raw_file_ends_the_session_and_names_it(
    raw3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "bad_readout.h5"
    shutil.copy(raw3, raw)
    with h5py.File(raw, "r+") as handle:
        data = handle["dataset/data"]
        heads = data["head"]
        number = next(
            i for i, h in enumerate(heads) if h["idx"]["slice"] == 1 and h["idx"]["kspace_encode_step_1"] == 5
        )
        record = data[number]
        record["data"] = np.zeros(1000, dtype=np.float32)  # 500 samples, the header says 16 x 2 coils
        data[number] = record
    chain = fault_chain(tmp_path, "image_per_slice")
    output = tmp_path / "out.h5"
    start = time.monotonic()
    status = main([str(raw), "-c", str(chain), "-o", str(output), "-G", "g", "--timeout", "40"])
    assert time.monotonic() - start < 20.0, "the session waited for the timeout"
    assert status == 1
    assert last_line(capsys.readouterr().err) == (
        f"pogmdm-recon: wrote 1 of 3 images to {output} (group g); bad raw file {raw}: acquisition "
        f"{number} (slice 1, line 5): its header says 2 channel(s) x 16 samples, its data hold 500 "
        "complex values; slices 1, 2 lost"
    )
    assert image_slices(output, "g") == [0]


def test_a_slice_with_fewer_channels_in_the_buffered_chain_names_the_slice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    eight = write_synthetic_raw(tmp_path / "eight.h5", SyntheticScan(**{**SCAN.__dict__, "coils": 8}))
    raw = tmp_path / "four_channel_slice.h5"
    with (
        ismrmrd.Dataset(str(eight), "dataset", create_if_needed=False) as source,
        ismrmrd.Dataset(str(raw), "dataset", create_if_needed=True) as target,
    ):
        target.write_xml_header(source.read_xml_header())
        for i in range(source.number_of_acquisitions()):
            acquisition = source.read_acquisition(i)
            if acquisition.idx.slice == 1 and not acquisition.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
                header = acquisition.getHead()
                header.active_channels = header.available_channels = 4
                acquisition = ismrmrd.Acquisition(header, np.ascontiguousarray(acquisition.data[:4]))
            target.append_acquisition(acquisition)
    chain = fault_chain(tmp_path, "image_per_slice", template=str(BUFFERED_CHAIN))
    output = tmp_path / "out.h5"
    start = time.monotonic()
    status = main([str(raw), "-c", str(chain), "-o", str(output), "-G", "g", "--timeout", "40"])
    assert time.monotonic() - start < 20.0, "the session waited for the timeout"
    assert status == 1
    assert last_line(capsys.readouterr().err) == (
        f"pogmdm-recon: wrote 1 of 3 images to {output} (group g); bad input {raw} for the chain's "
        "NoiseAdjustGadget: readout slice 1, line 0 has 4 channels, the noise scan has 8; slices 1, 2 lost"
    )
    assert image_slices(output, "g") == [0]


# 2. The raw file is only read.


def test_a_read_only_raw_file_is_read_and_left_untouched(
    raw3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = tmp_path / "read_only.h5"
    shutil.copy(raw3, raw)
    os.utime(raw, ns=(1_000_000_000, 1_000_000_000))
    raw.chmod(0o444)
    before = raw.stat()
    output = tmp_path / "out.h5"
    status = main(
        [str(raw), "-c", str(fault_chain(tmp_path, "image_per_slice")), "-o", str(output), "-G", "g"]
    )
    assert status == 0
    assert last_line(capsys.readouterr().err) == f"pogmdm-recon: wrote 3 images to {output} (group g)"
    after = raw.stat()
    assert (after.st_mtime_ns, after.st_size, after.st_mode) == (
        before.st_mtime_ns,
        before.st_size,
        before.st_mode,
    )
    assert image_slices(output, "g") == [0, 1, 2]


def test_two_runs_read_one_raw_file_at_once(raw3: Path, tmp_path: Path) -> None:
    slow = fault_chain(tmp_path, "slow_image_per_slice")
    first = Cli(
        [str(raw3), "-c", str(slow), "-o", str(tmp_path / "first.h5"), "-G", "g"],
        tmp_path,
        env={"FAULT_GADGET_DELAY": "4"},
    )
    try:
        first.wait_for("started the gadget process")  # the raw file is open now
        second = tmp_path / "second.h5"
        status = main(
            [str(raw3), "-c", str(fault_chain(tmp_path, "image_per_slice")), "-o", str(second), "-G", "g"]
        )
        assert first.process.poll() is None, "the first run ended before the second one read the file"
        assert status == 0
        code, stderr = first.finish()
    finally:
        first.close()
    assert code == 0, stderr
    assert image_slices(tmp_path / "first.h5", "g") == image_slices(second, "g") == [0, 1, 2]
