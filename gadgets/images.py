"""Reconstruction results -> ISMRMRD images with headers and meta a scanner database accepts.

One magnitude series per kind of output: the image (``image_series``) and, when requested, the
posterior std map (``std_series``). Headers copy the geometry, counters and time stamps of the
readout nearest the k-space centre and take matrix size and field of view from the recon space;
the meta attributes use the names the Siemens FIRE / Gadgetron image writers read (DataRole,
ImageComments, ImageProcessingHistory, SequenceDescriptionAdditional, WindowCenter,
WindowWidth, ImageRowDir, ImageColumnDir, Keep_image_geometry).

Image data are ``(channels=1, z=1, y=H, x=W)`` float32, C-contiguous and writable: exactly what
``ismrmrd.Image`` / gadgetron 1.4.1 serialise under numpy 2 without a copy
(:func:`gadgets.compat.image_data`).

A partition of a 3D slab is a 2D image of its own: ``slice`` = slab (the acquisitions' slice
counter) x partitions + partition, position moved along the slice direction by the
partition's offset, field of view z = the partition thickness; meta ``PogmdmSlab`` and
``PogmdmPartition`` keep both numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import ismrmrd
import numpy as np
import torch
from torch import Tensor

from gadgets.compat import image_data
from gadgets.encoding import EncodingInfo
from gadgets.readout import display_window, fit_to_recon_grid
from gadgets.settings import GadgetSettings
from gadgets.slices import AssembledSlice, Partition, shifted_position

PROCESSING_HISTORY = ["PYTHON", "POGMDM"]


class ReconOutput(Protocol):
    """What the gadget reads from ``recon_core.recon.reconstruction.ReconResult``."""

    image: Tensor
    std: Tensor | None
    info: dict


def images_for_slice(
    result: ReconOutput,
    assembled: AssembledSlice,
    encoding: EncodingInfo,
    settings: GadgetSettings,
    image_index: int,
) -> list[ismrmrd.Image]:
    """The image (and std map when ``settings.output_variance``) of one reconstructed slice.

    Raises:
        ValueError: if the std map was requested but the reconstruction returned none, or an
            output contains NaN / Inf.
    """
    outputs = [("image", result.image, settings.image_series)]
    if settings.output_variance:
        if result.std is None:
            raise ValueError("output_variance is set but the reconstruction returned no std map")
        outputs.append(("std", result.std, settings.std_series))
    images = []
    for kind, array, series in outputs:
        pixels = _recon_grid_pixels(array, assembled, encoding)
        if not np.isfinite(pixels).all():
            raise ValueError(f"the reconstructed {kind} contains NaN or Inf")
        meta = image_meta(kind, pixels, assembled.reference, settings, result.info)
        if assembled.partition is not None:
            meta["PogmdmSlab"] = int(assembled.reference.idx.slice)
            meta["PogmdmPartition"] = assembled.partition.index
        images.append(
            make_image(pixels, assembled.reference, encoding, series, image_index, meta, assembled.partition)
        )
    return images


def make_image(
    pixels: np.ndarray,
    reference: ismrmrd.AcquisitionHeader,
    encoding: EncodingInfo,
    series: int,
    image_index: int,
    meta: ismrmrd.Meta,
    partition: Partition | None = None,
) -> ismrmrd.Image:
    """An ``ismrmrd.Image`` of a ``(H, W)`` magnitude array with its header filled from ``reference``.

    For a ``partition`` of a 3D slab: ``slice`` = slab x partitions + partition, position
    moved by its offset along the slice direction, field of view z its thickness.
    """
    data = image_data(pixels)
    header = ismrmrd.ImageHeader.from_acquisition(reference)
    header.version = 1
    header.flags = 0
    header.average = 0
    header.field_of_view = tuple(float(v) for v in encoding.recon_fov_mm)
    header.image_type = ismrmrd.IMTYPE_MAGNITUDE
    header.image_index = image_index
    header.image_series_index = series
    if partition is not None:
        header.slice = int(reference.idx.slice) * partition.count + partition.index
        header.position = shifted_position(reference, partition.offset_mm)
        fov_x, fov_y, _ = encoding.recon_fov_mm
        header.field_of_view = (float(fov_x), float(fov_y), float(partition.thickness_mm))
    return ismrmrd.Image(head=header, data=data, meta=meta)


def image_meta(
    kind: str,
    pixels: np.ndarray,
    reference: ismrmrd.AcquisitionHeader,
    settings: GadgetSettings,
    info: Mapping[str, Any],
) -> ismrmrd.Meta:
    """Meta attributes for an output of ``kind`` ``"image"`` or ``"std"``."""
    centre, width = display_window(torch.from_numpy(np.asarray(pixels, dtype=np.float32)))
    meta = ismrmrd.Meta()
    meta["DataRole"] = "Image"
    meta["ImageProcessingHistory"] = list(PROCESSING_HISTORY)
    meta["ImageComments"] = image_comment(kind, settings)
    meta["SequenceDescriptionAdditional"] = "POGMDM" if kind == "image" else "POGMDM_STD"
    meta["WindowCenter"] = f"{centre:.6g}"
    meta["WindowWidth"] = f"{width:.6g}"
    meta["Keep_image_geometry"] = 1
    meta["ImageRowDir"] = [f"{float(v):.9f}" for v in reference.read_dir]
    meta["ImageColumnDir"] = [f"{float(v):.9f}" for v in reference.phase_dir]
    meta["PogmdmOutput"] = kind
    meta["PogmdmPreset"] = settings.preset
    if kind == "std":
        meta.update(std_meta(settings))
    for key, value in sorted(info.items()):
        if isinstance(value, bool | int | float | str) and len(str(value)) < 200:
            meta[f"Pogmdm_{key}"] = str(value)
    return meta


def std_meta(settings: GadgetSettings) -> dict[str, str]:
    """What the std series is, for a reader on the scanner: estimator, units, chains."""
    chains = settings.recon.num_chains
    if settings.recon.method == "jackknife":
        what = (
            f"error of the image: delete-a-group jackknife over {chains} replicates, each leaving "
            f"1/{chains} of the acquired lines outside the calibration block out "
            "(root of variance (m-1)/m sum (x_i - mean)^2 plus squared bias ((m-1)(mean - x))^2, "
            "averaged over 3x3 pixels)"
        )
    else:
        what = "magnitude of the posterior samples (pixel-wise sample std over the chains, 1/(B-1))"
    return {
        "PogmdmStdOf": what,
        "PogmdmStdUnits": f"same units and scale as the image series {settings.image_series}",
        "PogmdmChains": str(chains),
        "PogmdmStdRelativeError": f"{1.0 / (2.0 * (chains - 1)) ** 0.5:.2f}",
        "PogmdmSampler": settings.recon.method,
    }


def image_comment(kind: str, settings: GadgetSettings) -> str:
    """``ImageComments``: method and key parameters, e.g. ``PoGMDM MAP 100 it seed 0 preset fast``;
    the std series says it is a std in image units and over how many chains."""
    config = settings.recon
    if config.method == "map":
        method = f"PoGMDM MAP {config.map_iterations} it"
    elif config.method == "jackknife":
        label = f"jackknife RMS error (image units) {config.num_chains} groups, " if kind == "std" else ""
        method = f"PoGMDM {label}MAP {config.map_iterations} it"
    else:
        label = "posterior std (image units)" if kind == "std" else "posterior mean"
        if config.method == "posterior_pc":
            schedule = f"PC {config.num_noise_levels - 1}x(1+{config.corrector_steps}) steps"
        else:
            schedule = f"{config.num_noise_levels}x{config.steps_per_level} steps"
        method = f"PoGMDM {label} {config.num_chains} chains {schedule}"
        if config.initialisation == "map":
            method += f" from MAP {config.map_iterations} it"
    return f"{method} seed {config.seed} preset {settings.preset}"


def _recon_grid_pixels(array: Tensor, assembled: AssembledSlice, encoding: EncodingInfo) -> np.ndarray:
    """``(H, W)`` float32 numpy image on the header's recon matrix and field of view."""
    image = array.detach().to("cpu").float()
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) image from the reconstruction, got shape {tuple(image.shape)}")
    recon_x, recon_y, _ = encoding.recon_matrix
    fitted = fit_to_recon_grid(
        image,
        assembled.pixel_spacing_mm,
        recon_matrix=(recon_y, recon_x),
        recon_fov_mm=(encoding.recon_fov_mm[1], encoding.recon_fov_mm[0]),
    )
    return fitted.numpy().astype(np.float32, copy=True)
