"""``pogmdm-recon``'s checks before the gadget starts and its late failures: output paths are
checked first and a late failure never loses the images; input and chain errors name the file;
a bad device is a bad argument. Fault gadgets and helpers as in ``test_replay_faults.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from replay_runs import fault_chain, image_slices, last_line

from gadgets.replay import main

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
