"""Training images: real MR magnitude slices from public wheels, or from the user's files.

Every image is a 2D float32 array scaled to max 1. Sources group the images of one origin
and carry a sampling weight, so that a source with many slices does not drown the others.

Wheel data (no download; install the ``train`` extra): dipy's ``t1_coronal_slice.npy`` and
``S0_10slices.nii.gz``, nilearn's MNI152 T1 template (axial slices ``MNI_TRAIN_SLICES`` only;
``MNI_HELDOUT_SLICES``, 15+ mm away, are kept for the denoising benchmark), matplotlib's
``s1045.ima.gz``, nibabel's ``example4d.nii.gz`` and pydicom's ``MR_small.dcm``.
User data: a folder (searched recursively) of ``.npy`` (2D, or 3D as ``(slices, H, W)``),
``.png`` (grey or RGB, averaged) and fastMRI-style ``.h5`` files (``reconstruction_rss`` if
present, else the root-sum-of-squares of the centred inverse FFT of ``kspace``).
"""

from __future__ import annotations

import gzip
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon_core.physics.fourier import centred_ifft

MNI_TRAIN_SLICES = tuple(range(20, 100, 4))
MNI_HELDOUT_SLICES = (115, 125, 135)
MIN_SIGNAL = 0.02
"""Slices whose mean (after scaling to max 1) is below this are skipped as empty."""


@dataclass(frozen=True)
class ImageSource:
    """Images of one origin: ``images`` 2D float32 arrays (max 1), drawn with ``weight``."""

    name: str
    images: tuple[np.ndarray, ...]
    weight: float = 1.0


def normalise(image: np.ndarray) -> np.ndarray:
    """Magnitude, float32, scaled to max 1 (an all-zero image stays zero)."""
    magnitude = np.abs(np.asarray(image, dtype=np.float64 if not np.iscomplexobj(image) else np.complex128))
    peak = float(magnitude.max()) if magnitude.size else 0.0
    return (magnitude / peak if peak > 0 else magnitude).astype(np.float32)


def _slices(volume: np.ndarray, axis: int, indices: Iterable[int] | None = None) -> list[np.ndarray]:
    volume = np.moveaxis(np.asarray(volume), axis, 0)
    chosen = range(volume.shape[0]) if indices is None else indices
    images = [normalise(volume[index]) for index in chosen]
    return [image for image in images if image.mean() >= MIN_SIGNAL]


def _module_path(name: str) -> Path:
    module = importlib.import_module(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


def _dipy_t1() -> list[np.ndarray]:
    return [normalise(np.load(_module_path("dipy") / "data" / "files" / "t1_coronal_slice.npy"))]


def _dipy_s0() -> list[np.ndarray]:
    nibabel = importlib.import_module("nibabel")
    volume = nibabel.load(_module_path("dipy") / "data" / "files" / "S0_10slices.nii.gz").get_fdata()
    return _slices(volume[..., 0] if volume.ndim == 4 else volume, axis=2)


def load_mni152(indices: Iterable[int]) -> list[np.ndarray]:
    """Axial slices ``indices`` of nilearn's MNI152 T1 template (1 mm, 197 x 233 x 189)."""
    datasets = importlib.import_module("nilearn.datasets")
    volume = datasets.load_mni152_template().get_fdata()
    return [normalise(volume[:, :, index]) for index in indices]


def _mni_train() -> list[np.ndarray]:
    return load_mni152(MNI_TRAIN_SLICES)


def _matplotlib_s1045() -> list[np.ndarray]:
    cbook = importlib.import_module("matplotlib.cbook")
    path = Path(cbook.get_sample_data("s1045.ima.gz", asfileobj=False))
    raw = np.frombuffer(gzip.decompress(path.read_bytes()), dtype="<u2")
    return [normalise(raw.reshape(256, 256).astype(np.float32))]


def _nibabel_example4d() -> list[np.ndarray]:
    nibabel = importlib.import_module("nibabel")
    volume = nibabel.load(_module_path("nibabel") / "tests" / "data" / "example4d.nii.gz").get_fdata()
    return _slices(volume[..., 0], axis=2)


def _pydicom_mr_small() -> list[np.ndarray]:
    pydicom = importlib.import_module("pydicom")
    path = importlib.import_module("pydicom.data").get_testdata_file("MR_small.dcm")
    return [normalise(pydicom.dcmread(path).pixel_array.astype(np.float32))]


WHEEL_SOURCES: dict[str, tuple[Callable[[], list[np.ndarray]], float]] = {
    "dipy/t1_coronal_slice.npy": (_dipy_t1, 1.0),
    "dipy/S0_10slices.nii.gz": (_dipy_s0, 1.0),
    "nilearn/MNI152 template (axial 20..96 step 4)": (_mni_train, 1.5),
    "matplotlib/s1045.ima.gz": (_matplotlib_s1045, 1.0),
    "nibabel/example4d.nii.gz (volume 0)": (_nibabel_example4d, 0.5),
    "pydicom/MR_small.dcm": (_pydicom_mr_small, 0.5),
}


def wheel_sources() -> list[ImageSource]:
    """The MR images shipped inside public wheels (those whose package is installed).

    Raises:
        RuntimeError: if none of the packages is installed (``pip install .[train]``).
    """
    sources = []
    for name, (loader, weight) in WHEEL_SOURCES.items():
        try:
            images = loader()
        except (ImportError, FileNotFoundError, OSError) as error:
            print(f"skipping training source {name}: {error}")
            continue
        if images:
            sources.append(ImageSource(name, tuple(images), weight))
    if not sources:
        raise RuntimeError("no training images: install the train extra (pip install '.[train]')")
    return sources


def _read_h5(path: Path) -> list[np.ndarray]:
    import h5py

    with h5py.File(path, "r") as handle:
        if "reconstruction_rss" in handle:
            return _slices(np.asarray(handle["reconstruction_rss"]), axis=0)
        if "kspace" in handle:
            kspace = np.asarray(handle["kspace"])
            if kspace.ndim == 3:  # (slices, ky, kx), single coil
                kspace = kspace[:, None]
            coils = centred_ifft(kspace.astype(np.complex128))
            return _slices(np.sqrt((np.abs(coils) ** 2).sum(axis=1)), axis=0)
    raise ValueError(f"{path}: no 'reconstruction_rss' or 'kspace' dataset")


def _read_file(path: Path) -> list[np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
        return [normalise(array)] if array.ndim == 2 else _slices(array, axis=0)
    if suffix == ".png":
        import matplotlib.image

        array = matplotlib.image.imread(path)
        return [normalise(array[..., :3].mean(axis=-1) if array.ndim == 3 else array)]
    if suffix in (".h5", ".hdf5"):
        return _read_h5(path)
    return []


def folder_sources(folder: Path) -> list[ImageSource]:
    """One source per file under ``folder`` (recursive; ``.npy``, ``.png``, ``.h5``)."""
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"training data folder {folder} does not exist")
    paths = sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else [folder]
    sources = []
    for path in paths:
        images = _read_file(path)
        if images:
            sources.append(ImageSource(str(path), tuple(images)))
    if not sources:
        raise RuntimeError(f"no .npy, .png or .h5 images found under {folder}")
    return sources


def describe(sources: Iterable[ImageSource]) -> list[dict[str, object]]:
    """JSON-ready summary of the sources (for the training record)."""
    return [
        {
            "name": source.name,
            "images": len(source.images),
            "weight": source.weight,
            "shapes": sorted({str(img.shape) for img in source.images}),
        }
        for source in sources
    ]


class PatchSampler:
    """Random augmented patches: pick a source (by weight), an image, a position; then a random
    flip, a rotation by a multiple of 90 degrees and an intensity scale.

    Images smaller than the patch are zero-padded (MR background is dark). Patches whose
    maximum is below ``min_peak`` are redrawn (up to a few times).

    Args:
        sources: the images.
        patch_size: side of the square patches.
        intensity_range: ``(low, high)`` of the uniform intensity scale.
        min_peak: the least acceptable patch maximum.
    """

    def __init__(
        self,
        sources: list[ImageSource],
        patch_size: int,
        intensity_range: tuple[float, float] = (0.6, 1.2),
        min_peak: float = 0.1,
    ) -> None:
        if not sources:
            raise ValueError("PatchSampler needs at least one image source")
        self.sources = sources
        self.patch_size = patch_size
        self.intensity_range = intensity_range
        self.min_peak = min_peak
        weights = np.array([source.weight for source in sources], dtype=np.float64)
        self.probabilities = weights / weights.sum()

    def _pad(self, image: np.ndarray) -> np.ndarray:
        pad_y = max(0, self.patch_size - image.shape[0])
        pad_x = max(0, self.patch_size - image.shape[1])
        if pad_y or pad_x:
            image = np.pad(image, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)))
        return image

    def _one(self, rng: np.random.Generator) -> np.ndarray:
        patch = np.zeros((self.patch_size, self.patch_size), dtype=np.float32)
        for _ in range(8):
            source = self.sources[rng.choice(len(self.sources), p=self.probabilities)]
            image = self._pad(source.images[rng.integers(len(source.images))])
            top = rng.integers(image.shape[0] - self.patch_size + 1)
            left = rng.integers(image.shape[1] - self.patch_size + 1)
            patch = image[top : top + self.patch_size, left : left + self.patch_size]
            if patch.max() >= self.min_peak:
                break
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        patch = np.rot90(patch, k=int(rng.integers(4)))
        scale = rng.uniform(*self.intensity_range)
        return np.ascontiguousarray(patch * scale, dtype=np.float32)

    def sample(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """``(batch, patch, patch)`` float32 patches."""
        return np.stack([self._one(rng) for _ in range(batch)])
