"""``pogmdm-recon`` when things go wrong: nothing received is lost, nothing fails silently.

Real processes and sockets throughout: the gadget is a child ``python -m gadgetron`` running a
small misbehaving target from :mod:`tests.helpers.fault_gadgets` (no torch, about a second to start);
the runs that need signals or an uncaught-exception check run ``pogmdm-recon`` itself as a
subprocess. Each case checks the exit status, that the LAST stderr line names what was written,
why the run fell short and which slices were lost, and that every received image was written.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import ismrmrd
import numpy as np
import pytest

from gadgets.demo.synthetic import SyntheticScan, write_synthetic_raw
from gadgets.replay import main

PROJECT = Path(__file__).resolve().parents[2]
BUFFERED_CHAIN = PROJECT / "config" / "pogmdm_buffered.xml"
SCAN = SyntheticScan(matrix=16, coils=2, slices=3, acceleration=1, calibration_lines=0, oversampling=1)


@pytest.fixture(scope="module")
def raw3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-slice, 2-coil, 16 x 16 synthetic raw file (a noise readout first)."""
    return write_synthetic_raw(tmp_path_factory.mktemp("raw") / "three_slices.h5", SCAN)


def fault_chain(folder: Path, target: str, template: str | None = None) -> Path:
    """A chain XML whose Python gadget is ``tests.helpers.fault_gadgets.<target>``."""
    execute = f'<execute name="tests.helpers.fault_gadgets" target="{target}" type="python"/>'
    if template is None:
        text = (
            "<configuration><version>2</version><stream><external>"
            f"{execute}<configuration/></external></stream></configuration>"
        )
    else:
        text = re.sub(r"<execute [^>]*/>", execute, Path(template).read_text(encoding="utf-8"))
        text = re.sub(r"<configuration>\s*<property.*?</configuration>", "<configuration/>", text, flags=re.S)
    path = folder / f"{target}.xml"
    path.write_text(text, encoding="utf-8")
    return path


class Cli:
    """``pogmdm-recon ARGUMENTS`` as its own process; a thread collects its stderr lines.

    (A thread, so that a gadget child that outlives it and holds the pipe cannot hang a test.)
    """

    def __init__(self, arguments: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gadgets.replay", *arguments],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, limit: float = 60.0) -> str:
        """The first stderr line containing ``text`` (waiting up to ``limit`` seconds)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} on stderr:\n{self.stderr}")

    def finish(self, limit: float = 60.0) -> tuple[int, str]:
        """``(exit status, whole stderr)``; kills the process after ``limit`` seconds."""
        try:
            status = self.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"pogmdm-recon did not end within {limit} s:\n{self.stderr}") from None
        self.reader.join(5.0)
        return status, self.stderr

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(5.0)
        if self.process.stderr is not None and not self.reader.is_alive():
            self.process.stderr.close()


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def image_slices(path: Path, group: str) -> list[int]:
    """The slice index of every image in ``/<group>/image_1``."""
    with ismrmrd.Dataset(str(path), group, create_if_needed=False) as dataset:
        return [dataset.read_image("image_1", i).slice for i in range(dataset.number_of_images("image_1"))]


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def process_gone(pid: int, limit: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``limit`` seconds."""
    end = time.monotonic() + limit
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)


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


# 6. Output paths are checked before the gadget starts; a late failure never loses the images.


@pytest.fixture
def locked_output(tmp_path: Path) -> object:
    """An HDF5 file held open for writing by another process."""
    path = tmp_path / "locked.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import h5py, sys, time; f = h5py.File({str(path)!r}, 'w'); print('ready'); "
         "sys.stdout.flush(); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    yield path
    holder.kill()
    holder.wait()
    holder.stdout.close()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_folder", "output folder {tmp}/no/such does not exist"),
        ("not_hdf5", "output {tmp}/notes.txt exists and is not an HDF5 file; not overwriting it"),
        ("folder", "output {tmp} is a folder; name a file (-o {tmp}/out.h5)"),
        ("png_is_a_file", "--png {tmp}/notes.txt is an existing file, not a folder"),
        ("locked", "output {tmp}/locked.h5 cannot be opened for writing: it is locked by another process"),
    ],
)
def test_output_paths_are_checked_before_the_gadget_starts(
    raw3: Path,
    tmp_path: Path,
    case: str,
    expected: str,
    request: pytest.FixtureRequest,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    output = {
        "missing_folder": tmp_path / "no" / "such" / "out.h5",
        "not_hdf5": notes,
        "folder": tmp_path,
        "png_is_a_file": tmp_path / "out.h5",
    }.get(case)
    if case == "locked":
        output = request.getfixturevalue("locked_output")
    assert output is not None
    arguments = [str(raw3), "-c", str(fault_chain(tmp_path, "image_per_slice")), "-o", str(output)]
    if case == "png_is_a_file":
        arguments += ["--png", str(notes)]
    assert main(arguments) == 2
    assert last_line(capsys.readouterr().err).startswith(
        "pogmdm-recon: error: " + expected.format(tmp=tmp_path)
    )
    assert "started the gadget process" not in caplog.text
    assert notes.read_text() == "my notes\n"


def test_an_output_that_fails_at_the_end_goes_to_a_recovery_file(
    raw3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out.h5"
    monkeypatch.setenv("FAULT_GADGET_MAKE_FOLDER", str(output))  # after the checks passed
    status = main(
        [str(raw3), "-c", str(fault_chain(tmp_path, "image_per_slice")), "-o", str(output), "-G", "g"]
    )
    assert status == 1
    line = last_line(capsys.readouterr().err)
    match = re.fullmatch(
        r"pogmdm-recon: wrote 3 of 3 images to (\S+) instead: could not write (\S+) \(.*Is a directory.*\)",
        line,
    )
    assert match, line
    recovered = Path(match.group(1))
    assert match.group(2) == str(output) and recovered.parent == tmp_path
    assert recovered.name.startswith("out.recovered-") and recovered.suffix == ".h5"
    assert image_slices(recovered, "g") == [0, 1, 2]


def test_previews_that_fail_at_the_end_are_reported_and_the_images_kept(
    raw3: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output, previews = tmp_path / "out.h5", tmp_path / "previews"
    monkeypatch.setenv("FAULT_GADGET_MAKE_FILE", str(previews))
    chain = fault_chain(tmp_path, "image_per_slice")
    status = main([str(raw3), "-c", str(chain), "-o", str(output), "-G", "g", "--png", str(previews)])
    assert status == 1
    line = last_line(capsys.readouterr().err)
    written = f"pogmdm-recon: wrote 3 of 3 images to {output} (group g); "
    assert line.startswith(f"{written}could not write the PNG previews to {previews}: "), line
    assert image_slices(output, "g") == [0, 1, 2]


# 8. Input and chain errors name the file; a bad device is a bad argument.


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("not_hdf5_raw", "cannot read raw file {tmp}/notes.h5: not an HDF5 file"),
        ("bad_chain_xml", "chain {tmp}/broken.xml is not valid XML: "),
        (
            "bad_device",
            "gadget property device of chain pogmdm_config/pogmdm.xml with --set/--preset: "
            "unknown device 'gpu'",
        ),
        ("no_dataset", "raw file {raw} has no ISMRMRD raw data in /scan (xml and data)"),
        (
            "missing_module",
            "chain {tmp}/missing.xml: the gadget no_such_module.gadget.run cannot be started: "
            "no module named 'no_such_module' on the gadget's Python path",
        ),
    ],
)
def test_bad_inputs_exit_2_naming_the_file(
    raw3: Path, tmp_path: Path, case: str, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.h5").write_text("not HDF5\n")
    (tmp_path / "broken.xml").write_text("<configuration><version>2</version><stream>")
    missing = (
        fault_chain(tmp_path, "run")
        .read_text()
        .replace("tests.helpers.fault_gadgets", "no_such_module.gadget")
    )
    (tmp_path / "missing.xml").write_text(missing)
    arguments = {
        "not_hdf5_raw": [str(tmp_path / "notes.h5")],
        "bad_chain_xml": [str(raw3), "-c", str(tmp_path / "broken.xml")],
        "bad_device": [str(raw3), "--set", "device=gpu"],
        "no_dataset": [str(raw3), "--dataset", "scan"],
        "missing_module": [str(raw3), "-c", str(tmp_path / "missing.xml")],
    }[case]
    assert main([*arguments, "-o", str(tmp_path / "out.h5")]) == 2
    line = last_line(capsys.readouterr().err)
    assert line.startswith("pogmdm-recon: error: " + expected.format(tmp=tmp_path, raw=raw3)), line
    assert not (tmp_path / "out.h5").exists()
