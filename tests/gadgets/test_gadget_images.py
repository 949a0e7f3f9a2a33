"""Reconstruction results -> ISMRMRD images: headers, meta, dtypes, series, recon-grid fitting."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest
import torch

from gadgets.encoding import EncodingInfo
from gadgets.images import image_comment, images_for_slice
from gadgets.settings import settings_from_properties
from gadgets.slices import AssembledSlice
from recon_core.physics.kspace import KSpaceSlice, SliceIndex
from recon_core.recon.reconstruction import ReconResult


def _encoding(encoded_y: int = 40, recon_y: int = 32) -> EncodingInfo:
    return EncodingInfo(
        encoded_matrix=(48, encoded_y, 1),
        recon_matrix=(24, recon_y, 1),
        encoded_fov_mm=(240.0, 5.0 * encoded_y, 6.0),
        recon_fov_mm=(120.0, 5.0 * recon_y, 6.0),
        ky_minimum=0,
        ky_maximum=encoded_y - 1,
        ky_centre=encoded_y // 2,
    )


def _assembled(encoding: EncodingInfo) -> AssembledSlice:
    rows, columns = encoding.encoded_matrix[1], encoding.recon_matrix[0]
    mask = torch.ones(rows, columns, dtype=torch.bool)
    kspace = KSpaceSlice(
        kspace=torch.ones(2, rows, columns, dtype=torch.complex64),
        mask=mask,
        index=SliceIndex(slice=2, contrast=1, phase=0, repetition=3, set=1),
    )
    reference = ismrmrd.AcquisitionHeader()
    reference.version = 1
    reference.measurement_uid = 77
    reference.acquisition_time_stamp = 123456
    reference.physiology_time_stamp[:] = (11, 0, 0)
    reference.position[:] = (1.5, -2.5, 30.0)
    reference.read_dir[:] = (0.0, 1.0, 0.0)
    reference.phase_dir[:] = (-1.0, 0.0, 0.0)
    reference.slice_dir[:] = (0.0, 0.0, 1.0)
    reference.patient_table_position[:] = (0.0, 0.0, -1200.0)
    reference.idx.slice, reference.idx.contrast, reference.idx.repetition, reference.idx.set = 2, 1, 3, 1
    reference.idx.average = 4
    return AssembledSlice(
        kspace=kspace,
        reference=reference,
        pixel_spacing_mm=encoding.grid_spacing_mm,
        num_lines=rows,
        num_calibration_lines=0,
    )


def _result(rows: int, columns: int, with_std: bool) -> ReconResult:
    image = torch.arange(rows * columns, dtype=torch.float32).reshape(rows, columns)
    return ReconResult(
        image=image,
        std=0.1 * image + 1.0 if with_std else None,
        coil_maps=torch.ones(2, rows, columns, dtype=torch.complex64),
        info={"method": "posterior", "iterations": 12, "timings_s": {"total": 1.0}},
    )


def test_image_headers_copy_geometry_and_counters() -> None:
    encoding = _encoding()
    settings = settings_from_properties({"preset": "balanced", "output_variance": "true", "std_series": "5"})
    result = _result(40, 24, with_std=True)
    images = images_for_slice(result, _assembled(encoding), encoding, settings, image_index=7)
    assert [image.image_series_index for image in images] == [1, 5]
    for image in images:
        assert image.image_index == 7
        assert tuple(image.matrix_size) == (24, 32, 1)  # x = readout, y = phase cropped to the recon FOV
        assert tuple(image.field_of_view) == pytest.approx((120.0, 160.0, 6.0))
        assert tuple(image.position) == pytest.approx((1.5, -2.5, 30.0))
        assert tuple(image.read_dir) == (0.0, 1.0, 0.0)
        assert tuple(image.phase_dir) == (-1.0, 0.0, 0.0)
        assert tuple(image.slice_dir) == (0.0, 0.0, 1.0)
        assert tuple(image.patient_table_position) == (0.0, 0.0, -1200.0)
        assert (image.slice, image.contrast, image.phase, image.repetition, image.set) == (2, 1, 0, 3, 1)
        assert image.average == 0
        assert image.acquisition_time_stamp == 123456 and image.measurement_uid == 77
        assert image.physiology_time_stamp[0] == 11
        assert image.image_type == ismrmrd.IMTYPE_MAGNITUDE
        assert image.data_type == ismrmrd.DATATYPE_FLOAT and image.channels == 1
        assert image.data.dtype == np.float32 and image.data.shape == (1, 1, 32, 24)
        assert image.data.flags.c_contiguous and image.data.flags.writeable
    # The phase FOV is cropped centrally: encoded rows 4..35 are the recon rows 0..31.
    assert np.array_equal(images[0].data[0, 0], result.image[4:36].numpy())
    assert np.allclose(images[1].data[0, 0], result.std[4:36].numpy())  # type: ignore[index]


def test_image_meta_for_the_scanner_database() -> None:
    encoding = _encoding()
    settings = settings_from_properties({"preset": "balanced", "output_variance": "true", "chains": "3"})
    image, std = images_for_slice(_result(40, 24, True), _assembled(encoding), encoding, settings, 1)
    for item, description in ((image, "POGMDM"), (std, "POGMDM_STD")):
        meta = ismrmrd.Meta.deserialize(item.attribute_string)
        assert meta["DataRole"] == "Image"
        assert meta["ImageProcessingHistory"] == ["PYTHON", "POGMDM"]
        assert meta["SequenceDescriptionAdditional"] == description
        assert float(meta["WindowWidth"]) > 0 and float(meta["WindowCenter"]) > 0
        assert [float(v) for v in meta["ImageRowDir"]] == [0.0, 1.0, 0.0]
        assert [float(v) for v in meta["ImageColumnDir"]] == [-1.0, 0.0, 0.0]
        assert meta["Pogmdm_iterations"] == "12" and "Pogmdm_timings_s" not in meta
    comment = ismrmrd.Meta.deserialize(image.attribute_string)["ImageComments"]
    assert comment == "PoGMDM posterior mean 3 chains 5x4 steps from MAP 200 it seed 0 preset balanced"
    assert "posterior std" in ismrmrd.Meta.deserialize(std.attribute_string)["ImageComments"]
    assert image_comment("image", settings_from_properties({})) == "PoGMDM MAP 100 it seed 0 preset fast"


def test_images_survive_the_wire_format() -> None:
    encoding = _encoding(encoded_y=32, recon_y=32)
    settings = settings_from_properties({})
    (image,) = images_for_slice(_result(32, 24, False), _assembled(encoding), encoding, settings, 3)
    received = ismrmrd.Image.from_bytes(image.to_bytes())
    assert received == image
    assert received.image_series_index == 1 and received.image_index == 3


def test_missing_std_map_or_non_finite_output_is_an_error() -> None:
    encoding = _encoding()
    variance = settings_from_properties({"preset": "balanced", "output_variance": "true"})
    with pytest.raises(ValueError, match="returned no std map"):
        images_for_slice(_result(40, 24, False), _assembled(encoding), encoding, variance, 1)
    broken = _result(40, 24, False)
    broken.image[20, 10] = float("nan")
    with pytest.raises(ValueError, match="image contains NaN"):
        images_for_slice(broken, _assembled(encoding), encoding, settings_from_properties({}), 1)


def test_std_series_says_what_it_is() -> None:
    encoding = _encoding()
    settings = settings_from_properties({"preset": "posterior_pc", "output_variance": "true", "chains": "6"})
    image, std = images_for_slice(_result(40, 24, True), _assembled(encoding), encoding, settings, 1)
    meta = ismrmrd.Meta.deserialize(std.attribute_string)
    assert meta["ImageComments"] == (
        "PoGMDM posterior std (image units) 6 chains PC 20x(1+1) steps from MAP 200 it "
        "seed 0 preset posterior_pc"
    )
    assert meta["PogmdmChains"] == "6" and meta["PogmdmSampler"] == "posterior_pc"
    assert meta["PogmdmStdUnits"] == "same units and scale as the image series 1"
    assert "sample std" in meta["PogmdmStdOf"] and meta["PogmdmStdRelativeError"] == "0.32"
    image_meta = ismrmrd.Meta.deserialize(image.attribute_string)
    assert "PogmdmChains" not in image_meta
    assert image_meta["ImageComments"].startswith("PoGMDM posterior mean 6 chains PC 20x(1+1) steps")


def test_jackknife_std_series_says_what_it_is() -> None:
    encoding = _encoding()
    settings = settings_from_properties({"preset": "jackknife", "output_variance": "true"})
    image, std = images_for_slice(_result(40, 24, True), _assembled(encoding), encoding, settings, 1)
    meta = ismrmrd.Meta.deserialize(std.attribute_string)
    assert meta["ImageComments"] == (
        "PoGMDM jackknife RMS error (image units) 8 groups, MAP 100 it seed 0 preset jackknife"
    )
    assert meta["PogmdmSampler"] == "jackknife" and "delete-a-group jackknife over 8" in meta["PogmdmStdOf"]
    image_meta = ismrmrd.Meta.deserialize(image.attribute_string)
    assert image_meta["ImageComments"] == "PoGMDM MAP 100 it seed 0 preset jackknife"
