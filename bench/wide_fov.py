"""An object wider than the field of view: soft SENSE (two map sets) against BART and one map set.

Not a test (``tests/physics/test_espirit.py`` has the fixed-bound two-map test). Run from the
repository root::

    python bench/wide_fov.py                   # the brain folded to 140 and 120 of its 180 rows
    python bench/wide_fov.py --rows 130 --preset balanced

The fully sampled Berkeley 8-coil brain (``bench/quality.py``'s data) is folded along ky: its
coil images are wrapped modulo ``rows`` (centred), which is exactly what a scan with a phase
field of view of ``rows / 180`` of the head records. The reference is the RSS of the folded,
fully sampled coil images (the fold-over included, as every method must reproduce it). Each
folded scan is undersampled equispaced R=3 + 24 calibration lines and reconstructed by:

* PoGMDM (``--preset``) with ``map_sets`` 0 (auto: a second map set where ESPIRiT's second
  eigenvalue shows the fold) and forced to 1;
* BART ``ecalib -m2`` (two map sets) + ``pics -l1`` over ``-r`` 1e-4, 1e-3, 1e-2 (best kept,
  an oracle advantage) with the maps' images combined by RSS;
* BART ``nlinv`` over 12, 18, 24 Newton steps (best kept).

PSNR and NRMSE (sqrt of the NMSE) over the object support after a least-squares scale, as
``bench/quality.py`` scores. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from metrics import object_support, score  # noqa: E402
from peers import _bart, bart_nlinv, read_cfl, to_bart, write_cfl  # noqa: E402
from quality import DATA, load_kspace, run_pogmdm  # noqa: E402

from recon_core.physics.fourier import centred_fft, centred_ifft  # noqa: E402
from recon_core.recon.config import load_preset  # noqa: E402
from recon_core.sim.masks import equispaced_lines_mask  # noqa: E402

PICS_GRID = (1e-4, 1e-3, 1e-2)
NLINV_GRID = (12, 18, 24)


def folded_scan(kspace: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(C, rows, W)`` k-space of the coil images wrapped modulo ``rows`` along ky, and the RSS
    of those folded coil images (the reference)."""
    coil_images = centred_ifft(kspace.astype(np.complex64))
    height = coil_images.shape[1]
    folded = np.zeros((coil_images.shape[0], rows, coil_images.shape[2]), np.complex64)
    start = (height - rows) // 2
    for row in range(height):
        folded[:, (row - start) % rows] += coil_images[:, row]
    return centred_fft(folded), np.sqrt((np.abs(folded) ** 2).sum(axis=0))


def bart_two_map_pics(kspace: np.ndarray, regularisation: float) -> np.ndarray:
    """``ecalib -m2`` + ``pics -l1``; the RSS over the two map sets' images, ``(ky, kx)``."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        write_cfl(folder / "k", to_bart(kspace))
        _bart(["ecalib", "-m2", "-r", "24", "k", "s"], folder)
        _bart(["pics", "-S", "-l1", "-r", str(regularisation), "k", "s", "x"], folder)
        images = read_cfl(folder / "x")
    images = images.reshape(images.shape[0], images.shape[1], -1)
    return np.sqrt((np.abs(images) ** 2).sum(axis=-1)).T


PEERS = {
    "BART ecalib -m2 + pics-l1": (PICS_GRID, bart_two_map_pics),
    "BART nlinv": (NLINV_GRID, bart_nlinv),
}


def _row(
    rows: int, method: str, image: np.ndarray, reference: np.ndarray, seconds: float, setting: str
) -> str:
    scores = score(image, reference, object_support(reference))
    nrmse = float(np.sqrt(scores.nmse))
    return f"| {rows} | {method} | {scores.psnr:.2f} | {nrmse:.4f} | {seconds:.1f} | {setting} |"


def run_rows(kspace: np.ndarray, rows: int, preset: str) -> None:
    """Every method on the brain folded to ``rows`` rows; prints one table row each."""
    folded, reference = folded_scan(kspace, rows)
    mask = equispaced_lines_mask((rows, folded.shape[2]), 3, 24).numpy()
    undersampled = (folded * mask).astype(np.complex64)
    for sets in (0, 1):
        config = dataclasses.replace(load_preset(preset), map_sets=sets)
        image, _, seconds, info = run_pogmdm(folded, mask, config, None)
        setting = f"map_sets {sets}: {info['map_sets']} set(s)"
        print(_row(rows, f"PoGMDM {preset}", image, reference, seconds, setting), flush=True)
    support = object_support(reference)
    for name, (grid, peer) in PEERS.items():
        best: tuple[float, np.ndarray, float, float] | None = None
        for value in grid:
            start = time.perf_counter()
            image = peer(undersampled, value)
            seconds = time.perf_counter() - start
            psnr = score(image, reference, support).psnr
            if best is None or psnr > best[0]:
                best = (psnr, image, seconds, value)
        assert best is not None
        print(_row(rows, name, best[1], reference, best[2], f"best of {grid}: {best[3]:g}"), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="140,120", help="phase field of view(s) in rows of the 180")
    parser.add_argument("--preset", default="fast")
    args = parser.parse_args(argv)
    kspace = load_kspace(DATA)
    print("| rows | method | PSNR (dB) | NRMSE | time (s) | setting |")
    print("|---:|---|---:|---:|---:|---|")
    for rows in (int(value) for value in args.rows.split(",")):
        run_rows(kspace, rows, args.preset)


if __name__ == "__main__":
    main()
