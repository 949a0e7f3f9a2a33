"""Received images -> an HDF5 file in ``gadgetron_ismrmrd_client``'s layout, and PNG previews.

The client appends every image it receives to ``/<group>/image_<image_series_index>/`` with the
``header``, ``attributes`` and ``data`` datasets of the ISMRMRD image format
(``ismrmrd.Dataset.append_image``); :func:`write_client_layout` does exactly that.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import h5py
import ismrmrd
import numpy as np


def default_group() -> str:
    """The client's default output group: the current date and time."""
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def write_client_layout(path: Path | str, group: str, images: Sequence[ismrmrd.Image]) -> list[str]:
    """Append ``images`` to ``/<group>/image_<series>/`` of ``path`` (an existing group is replaced).

    Returns:
        The image dataset paths written, e.g. ``["/pogmdm/image_1"]``.
    """
    path = Path(path)
    if path.exists():
        with h5py.File(path, "a") as handle:
            if group in handle:
                del handle[group]
    written: list[str] = []
    with ismrmrd.Dataset(str(path), group, create_if_needed=True) as dataset:
        for image in images:
            name = f"image_{image.image_series_index}"
            dataset.append_image(name, image)
            if f"/{group}/{name}" not in written:
                written.append(f"/{group}/{name}")
    return written


def preview_name(image: ismrmrd.Image) -> str:
    """``series<S>_image<NNN>_slice<s>_rep<r>.png``."""
    return (
        f"series{image.image_series_index}_image{image.image_index:03d}"
        f"_slice{image.slice}_rep{image.repetition}.png"
    )


def write_previews(directory: Path | str, images: Sequence[ismrmrd.Image]) -> list[Path]:
    """One greyscale PNG per image, windowed by its WindowCenter / WindowWidth meta."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in images:
        pixels = np.asarray(image.data, dtype=np.float32)[0, 0]
        low, high = _window(image, pixels)
        path = folder / preview_name(image)
        pyplot.imsave(path, pixels, cmap="gray", vmin=low, vmax=high, origin="upper")
        paths.append(path)
    return paths


def _window(image: ismrmrd.Image, pixels: np.ndarray) -> tuple[float, float]:
    try:
        centre = float(image.meta["WindowCenter"])
        width = float(image.meta["WindowWidth"])
    except (KeyError, TypeError, ValueError):
        return float(pixels.min()), float(pixels.max())
    return centre - width / 2.0, centre + width / 2.0
