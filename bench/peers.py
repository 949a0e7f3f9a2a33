"""Peer reconstructions for the quality benchmark: BART (ecalib + pics, nlinv) and SigPy.

Arrays here are numpy, in this project's axis order: k-space ``(C, ky, kx)`` complex64,
images ``(ky, kx)``. BART wants ``(kx, ky, kz, coils)`` in column-major ``.cfl`` files; the
conversion happens only in :func:`to_bart` / :func:`from_bart`. Both use the same centred FFT
convention (DC at index ``n // 2``), so no shift is needed.

BART runs as a subprocess (``bart`` on the ``PATH``, Debian package ``bart``) in a temporary
folder. Every peer returns a magnitude image; benchmark scaling happens in the metrics.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_cfl(path_without_suffix: Path, array: np.ndarray) -> None:
    """Write ``array`` as BART ``.hdr`` + ``.cfl`` (complex64, column-major)."""
    dims = list(array.shape) + [1] * max(0, 5 - array.ndim)
    path_without_suffix.with_suffix(".hdr").write_text(
        "# Dimensions\n" + " ".join(str(d) for d in dims) + "\n"
    )
    np.asarray(array, dtype=np.complex64).ravel(order="F").tofile(path_without_suffix.with_suffix(".cfl"))


def read_cfl(path_without_suffix: Path) -> np.ndarray:
    """Read a BART ``.hdr`` + ``.cfl`` pair (trailing singleton dimensions dropped)."""
    lines = path_without_suffix.with_suffix(".hdr").read_text().splitlines()
    dims = [int(d) for d in lines[1].split()]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    data = np.fromfile(path_without_suffix.with_suffix(".cfl"), dtype=np.complex64)
    return data.reshape(dims, order="F")


def to_bart(kspace: np.ndarray) -> np.ndarray:
    """``(C, ky, kx)`` -> BART ``(kx, ky, 1, C)``."""
    return np.transpose(kspace, (2, 1, 0))[:, :, None, :]


def from_bart_image(image: np.ndarray) -> np.ndarray:
    """BART ``(kx, ky, ...)`` image -> ``(ky, kx)`` (first map / first coil only)."""
    image = image.reshape(image.shape[0], image.shape[1], -1)[:, :, 0]
    return image.T


def bart_available() -> bool:
    return shutil.which("bart") is not None


def _bart(arguments: Sequence[str], folder: Path) -> None:
    completed = subprocess.run(["bart", *arguments], cwd=folder, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"bart {' '.join(arguments)} failed: {completed.stderr.strip()[-500:]}")


def espirit_maps(kspace: np.ndarray, calibration_size: int = 24, crop: float = 0.8) -> np.ndarray:
    """BART ``ecalib -m1`` sensitivities ``(C, ky, kx)`` (one set of maps).

    ESPIRiT needs a fully sampled calibration region: ``ecalib`` uses the largest fully
    sampled centre block, at most ``calibration_size`` wide. ``crop`` is ``ecalib -c`` (maps
    are zeroed where the eigenvalue is below it; BART's default 0.8 blanks most of the image
    when the calibration region is only a few lines).
    """
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_cfl(folder / "k", to_bart(kspace))
        _bart(["ecalib", "-m1", "-r", str(calibration_size), "-c", str(crop), "k", "s"], folder)
        maps = read_cfl(folder / "s").reshape(kspace.shape[2], kspace.shape[1], -1)
    return np.transpose(maps, (2, 1, 0))


def bart_pics_l1(
    kspace: np.ndarray, maps: np.ndarray, regularisation: float, iterations: int = 100
) -> np.ndarray:
    """BART ``pics -l1 -r lambda`` (l1-wavelet, ESPIRiT maps): magnitude ``(ky, kx)``."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_cfl(folder / "k", to_bart(kspace))
        write_cfl(folder / "s", to_bart(maps))
        _bart(["pics", "-S", "-l1", "-r", str(regularisation), "-i", str(iterations), "k", "s", "x"], folder)
        return np.abs(from_bart_image(read_cfl(folder / "x")))


def bart_nlinv(kspace: np.ndarray, iterations: int = 8) -> np.ndarray:
    """BART ``nlinv`` (joint image and coils by regularised Gauss-Newton): magnitude ``(ky, kx)``."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_cfl(folder / "k", to_bart(kspace))
        _bart(["nlinv", "-i", str(iterations), "k", "x"], folder)
        return np.abs(from_bart_image(read_cfl(folder / "x")))


def sigpy_l1_wavelet(
    kspace: np.ndarray, maps: np.ndarray, regularisation: float, iterations: int = 100
) -> np.ndarray:
    """SigPy ``L1WaveletRecon`` (Daubechies-4 wavelet, FISTA) with given maps: magnitude ``(ky, kx)``.

    SigPy's FFT is centred with DC at ``n // 2`` like ours, so the arrays pass unchanged.
    """
    import sigpy.mri as mr

    recon = mr.app.L1WaveletRecon(
        kspace.astype(np.complex64),
        maps.astype(np.complex64),
        lamda=regularisation,
        max_iter=iterations,
        show_pbar=False,
    ).run()
    return np.abs(np.asarray(recon))
