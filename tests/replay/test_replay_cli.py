"""``pogmdm-recon``: the offline replay command, end to end through a child gadget process."""

from __future__ import annotations

from pathlib import Path

import h5py
import ismrmrd
import matplotlib.image
import numpy as np
import pytest
from gadget_helpers import prior_weights_for_tests

from gadgets.demo.synthetic import demo_raw_file
from gadgets.replay import main

FAST = ["--set", "iterations=3", "--set", "device=cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Gadget properties naming a weights file (the shipped prior, or an untrained one)."""
    return ["--set", f"prior={prior_weights_for_tests(tmp_path_factory.mktemp('prior'))}"]


def test_demo_without_input_writes_the_client_layout(tmp_path: Path, prior: list[str]) -> None:
    output, previews = tmp_path / "demo_out.h5", tmp_path / "previews"
    assert demo_raw_file().stat().st_size < 2_000_000
    status = main(["-o", str(output), "--png", str(previews), "-G", "pogmdm", *FAST, *prior])
    assert status == 0
    with h5py.File(output, "r") as handle:
        assert list(handle) == ["pogmdm"]
        assert list(handle["pogmdm"]) == ["image_1"]
        group = handle["pogmdm/image_1"]
        assert sorted(group) == ["attributes", "data", "header"]
        assert group["data"].shape == (1, 1, 1, 96, 96) and group["data"].dtype == np.float32
    with ismrmrd.Dataset(str(output), "pogmdm", create_if_needed=False) as dataset:
        image = dataset.read_image("image_1", 0)
    assert (image.image_series_index, image.image_index) == (1, 1)
    assert tuple(image.matrix_size) == (96, 96, 1)
    assert tuple(image.field_of_view) == pytest.approx((240.0, 240.0, 5.0))
    assert tuple(image.read_dir) == (1.0, 0.0, 0.0) and tuple(image.slice_dir) == (0.0, 0.0, 1.0)
    assert np.isfinite(image.data).all() and float(image.data.max()) > 0.0
    assert ismrmrd.Meta.deserialize(image.attribute_string)["DataRole"] == "Image"
    (png,) = sorted(previews.glob("*.png"))
    assert png.name == "series1_image001_slice0_rep0.png"
    assert matplotlib.image.imread(png).shape[:2] == (96, 96)
    # A second run into the same group replaces it instead of appending a duplicate.
    assert main(["-o", str(output), "-G", "pogmdm", *FAST, *prior]) == 0
    with h5py.File(output, "r") as handle:
        assert handle["pogmdm/image_1/data"].shape[0] == 1


def test_acceptance_command_on_the_berkeley_file(tmp_path: Path, shared_data: Path, prior: list[str]) -> None:
    raw = shared_data / "berkeley_brain8ch" / "raw_R4_acs24.h5"
    output, previews = tmp_path / "out.h5", tmp_path / "previews"
    assert main([str(raw), "-o", str(output), "--png", str(previews), *FAST, *prior]) == 0
    with h5py.File(output, "r") as handle:
        (group,) = list(handle)  # the client's default group: date and time
        assert list(handle[group]) == ["image_1"]
    with ismrmrd.Dataset(str(output), group, create_if_needed=False) as dataset:
        assert dataset.number_of_images("image_1") == 1
        image = dataset.read_image("image_1", 0)
    assert tuple(image.matrix_size) == (230, 180, 1)
    assert tuple(image.field_of_view) == pytest.approx((220.0, 220.0, 5.0))
    assert tuple(image.phase_dir) == (0.0, 1.0, 0.0)
    assert len(list(previews.glob("*.png"))) == 1


def test_buffered_chain_replay(tmp_path: Path, prior: list[str]) -> None:
    output = tmp_path / "buffered.h5"
    assert main(["-c", "pogmdm_buffered", "-o", str(output), "-G", "b", *FAST, *prior]) == 0
    with ismrmrd.Dataset(str(output), "b", create_if_needed=False) as dataset:
        assert dataset.number_of_images("image_1") == 1


@pytest.mark.parametrize(
    "arguments",
    [
        ["-c", "no_such_chain"],
        ["--set", "no_such_property=1"],
        ["--set", "missing-equals-sign"],
        ["--preset", "no_such_preset"],
        ["/no/such/raw.h5"],
        ["--threads", "0"],
        ["--set", "device=gpu"],
        ["--timeout", "0"],
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, arguments: list[str]) -> None:
    assert main([*arguments, "-o", str(tmp_path / "out.h5")]) == 2
    assert not (tmp_path / "out.h5").exists()


def test_a_gadget_that_returns_no_image_fails(tmp_path: Path) -> None:
    chain = tmp_path / "pass_through.xml"
    chain.write_text(
        "<configuration><version>2</version><stream><external>"
        '<execute name="gadgetron.examples.pass_through" target="pass_through" type="python"/>'
        "<configuration/></external></stream></configuration>"
    )
    assert main(["-c", str(chain), "-o", str(tmp_path / "out.h5"), "--timeout", "120"]) == 1
    assert not (tmp_path / "out.h5").exists()


def test_list_chains(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list-chains"]) == 0
    assert capsys.readouterr().out.split() == ["pogmdm", "pogmdm_buffered", "pogmdm_variance"]
