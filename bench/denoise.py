"""Denoising benchmark of the PoGMDM prior on held-out real MR slices (a script, not a test).

Images (none used in training, all scaled to max 1):

* ``berkeley brain``: root-sum-of-squares of the fully sampled 8-coil brain slice in
  ``../shared/data/berkeley_brain8ch/kspace_full.cfl`` (230 x 180);
* ``MNI z=115/125/135``: axial slices of nilearn's MNI152 template that training leaves out
  (training uses z = 20..96; needs nilearn, skipped otherwise).

For every image and ``sigma`` in {0.025, 0.05, 0.1, 0.2}: add white Gaussian noise (fixed
seed), then compare the noisy input, the best Gaussian filter (width tuned per image and
sigma against the ground truth on a grid), the best total-variation denoiser (scikit-image
``denoise_tv_chambolle``, weight tuned likewise) and the PoGMDM Tweedie denoiser
``y + sigma^2 score(y, sigma)`` (exact score, no tuning) of every prior asked for (default: both
shipped priors, ``conv`` and ``shearlet``). PSNR and SSIM (7 x 7 window, k1 = 0.01, k2 = 0.03,
data range = max of the reference) over the whole image. Prints Markdown tables and whether
each prior beats both baselines in PSNR at every sigma.

Usage: ``python bench/denoise.py [--weights W ...] [--data ../shared/data] [--seed 0] [--quick]``
(``--quick``: the Berkeley brain only). After the table, per prior and sigma: the smallest PSNR
margin over the better baseline across the images and the margin of the mean PSNR; then where
the squared error of TV and of each prior lies (tissue vs background).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.restoration import denoise_tv_chambolle

from recon_core.physics.fourier import centred_ifft
from recon_core.prior import load_prior
from recon_core.prior.model import PoGMDM

SIGMAS = (0.025, 0.05, 0.1, 0.2)
GAUSSIAN_WIDTHS = np.linspace(0.3, 4.0, 38)
TV_WEIGHTS = np.geomspace(0.002, 0.6, 48)
REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINES = ("noisy", "gaussian", "tv")
DEFAULT_PRIORS = ("conv", "shearlet")
NONNEGATIVE = ", then max(., 0)"
"""Suffix of the column that projects a prior's Tweedie estimate onto ``x >= 0`` (magnitude
images are non-negative; the projection can only move the estimate closer to the truth).
The plain Tweedie column is what the issue's check is about."""


SCANNER_IMAGES = ("berkeley brain",)
"""Held-out images that are real scanner data from ``../shared/data`` (the issue's held-out set);
the MNI template slices are extra: a population average whose background is exactly zero."""

TISSUE_THRESHOLD = 0.05
"""Pixels of the clean image above this (max 1) count as tissue, the rest as background."""


@dataclass(frozen=True)
class Score:
    """PSNR (dB), SSIM, the tuned parameter (baselines) and the squared error summed over the
    tissue and over the background, divided by the pixel count (they add up to the MSE)."""

    psnr: float
    ssim: float
    parameter: float | None = None
    tissue_mse: float = float("nan")
    background_mse: float = float("nan")


def metrics(estimate: np.ndarray, reference: np.ndarray, parameter: float | None = None) -> Score:
    data_range = float(reference.max())
    psnr = peak_signal_noise_ratio(reference, estimate, data_range=data_range)
    ssim = structural_similarity(reference, estimate, win_size=7, K1=0.01, K2=0.03, data_range=data_range)
    squared = (estimate.astype(np.float64) - reference) ** 2
    tissue = reference > TISSUE_THRESHOLD * data_range
    return Score(
        float(psnr),
        float(ssim),
        parameter,
        float(squared[tissue].sum() / squared.size),
        float(squared[~tissue].sum() / squared.size),
    )


def best_of(
    denoiser: Callable[[np.ndarray, float], np.ndarray],
    noisy: np.ndarray,
    reference: np.ndarray,
    grid: np.ndarray,
) -> Score:
    """Oracle tuning: the grid value with the highest PSNR against ``reference``."""
    errors = [float(np.mean((denoiser(noisy, value) - reference) ** 2)) for value in grid]
    best = float(grid[int(np.argmin(errors))])
    return metrics(denoiser(noisy, best), reference, best)


def berkeley_brain(data: Path) -> np.ndarray:
    """RSS image (230 x 180) of the fully sampled Berkeley brain k-space, scaled to max 1."""
    kspace = np.fromfile(data / "berkeley_brain8ch" / "kspace_full.cfl", np.complex64).reshape(
        (230, 180, 8), order="F"
    )
    coils = centred_ifft(kspace.astype(np.complex128), (0, 1))
    image = np.sqrt((np.abs(coils) ** 2).sum(axis=-1))
    return (image / image.max()).astype(np.float32)


def held_out_images(data: Path, use_mni: bool) -> dict[str, np.ndarray]:
    images = {}
    if (data / "berkeley_brain8ch" / "kspace_full.cfl").is_file():
        images["berkeley brain"] = berkeley_brain(data)
    else:
        print(f"(berkeley brain not found under {data}; skipped)")
    if use_mni:
        try:
            from recon_core.training.data import MNI_HELDOUT_SLICES, load_mni152

            for index, image in zip(MNI_HELDOUT_SLICES, load_mni152(MNI_HELDOUT_SLICES), strict=True):
                images[f"MNI z={index}"] = image
        except ImportError as error:
            print(f"(MNI152 slices skipped: {error})")
    if not images:
        raise SystemExit("no held-out images found")
    return images


def pogmdm_denoiser(model: PoGMDM) -> Callable[[np.ndarray, float], np.ndarray]:
    def denoise(noisy: np.ndarray, sigma: float) -> np.ndarray:
        with torch.no_grad():
            return model.denoise(torch.from_numpy(noisy)[None], sigma)[0].numpy()

    return denoise


def run(
    models: dict[str, PoGMDM], images: dict[str, np.ndarray], seed: int
) -> dict[tuple[str, float], dict[str, Score]]:
    """Scores keyed by ``(image, sigma)`` then by column: the baselines, then per prior ``label``
    its Tweedie estimate (``label``) and that estimate projected onto ``x >= 0``."""
    results: dict[tuple[str, float], dict[str, Score]] = {}
    denoisers = {label: pogmdm_denoiser(model) for label, model in models.items()}
    for image_index, (name, clean) in enumerate(images.items()):
        for sigma_index, sigma in enumerate(SIGMAS):
            rng = np.random.default_rng([seed, image_index, sigma_index])
            noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
            started = time.perf_counter()
            entry = {
                "noisy": metrics(noisy, clean),
                "gaussian": best_of(
                    lambda y, w: gaussian_filter(y, w, mode="reflect"), noisy, clean, GAUSSIAN_WIDTHS
                ),
                "tv": best_of(lambda y, w: denoise_tv_chambolle(y, weight=w), noisy, clean, TV_WEIGHTS),
            }
            for label, denoise in denoisers.items():
                estimate = denoise(noisy, sigma)
                entry[label] = metrics(estimate, clean)
                entry[label + NONNEGATIVE] = metrics(np.maximum(estimate, 0.0), clean)
            results[(name, sigma)] = entry
            print(f"  {name} sigma={sigma}: {time.perf_counter() - started:.1f} s", flush=True)
    return results


def table(results: dict[tuple[str, float], dict[str, Score]], images: list[str], priors: list[str]) -> str:
    columns = [*BASELINES, *(key for label in priors for key in (label, label + NONNEGATIVE))]
    contenders = ["gaussian", "tv", *priors]
    headers = ["noisy", "best Gaussian (width)", "best TV (weight)"]
    headers += [f"PoGMDM {key}" for label in priors for key in (label, label + NONNEGATIVE)]
    lines = [
        "| image | sigma | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(headers),
    ]
    for name, sigma in [(name, sigma) for name in images for sigma in SIGMAS]:
        entry = results[(name, sigma)]
        cells = [f"{entry[key].psnr:.2f} / {entry[key].ssim:.3f}" for key in columns]
        cells[1] += f" ({entry['gaussian'].parameter:.2f} px)"
        cells[2] += f" ({entry['tv'].parameter:.3f})"
        index = columns.index(max(contenders, key=lambda key: entry[key].psnr))
        cells[index] = f"**{cells[index]}**"
        lines.append(f"| {name} | {sigma} | " + " | ".join(cells) + " |")
    if len(images) > 1:
        for sigma in SIGMAS:
            mean = {key: mean_score(results, images, sigma, key) for key in columns}
            cells = [f"{mean[key][0]:.2f} / {mean[key][1]:.3f}" for key in columns]
            lines.append(f"| mean of {len(images)} | {sigma} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_score(
    results: dict[tuple[str, float], dict[str, Score]], images: list[str], sigma: float, key: str
) -> tuple[float, float]:
    """Mean PSNR and mean SSIM of column ``key`` over ``images`` at ``sigma``."""
    return (
        float(np.mean([results[(name, sigma)][key].psnr for name in images])),
        float(np.mean([results[(name, sigma)][key].ssim for name in images])),
    )


def error_split(
    results: dict[tuple[str, float], dict[str, Score]], images: list[str], priors: list[str]
) -> str:
    """Where the error is: MSE (x 1e-4) from tissue and from background, TV against each prior."""
    headers = ["TV tissue", "TV background"]
    headers += [f"{label} {part}" for label in priors for part in ("tissue", "background")]
    lines = [
        f"Error split (MSE x 1e-4; tissue = clean > {TISSUE_THRESHOLD} of max):",
        "",
        "| image | sigma | " + " | ".join(headers) + " |",
        "|---|---|" + "---|" * len(headers),
    ]
    for name in images:
        for sigma in SIGMAS:
            entry = results[(name, sigma)]
            values = [
                part for key in ("tv", *priors) for part in (entry[key].tissue_mse, entry[key].background_mse)
            ]
            cells = " | ".join(f"{1e4 * value:.2f}" for value in values)
            lines.append(f"| {name} | {sigma} | {cells} |")
    return "\n".join(lines)


def margin(results: dict[tuple[str, float], dict[str, Score]], name: str, sigma: float, key: str) -> float:
    """PSNR of column ``key`` minus that of the better baseline (dB) on one image."""
    entry = results[(name, sigma)]
    return entry[key].psnr - max(entry["gaussian"].psnr, entry["tv"].psnr)


def margins(results: dict[tuple[str, float], dict[str, Score]], images: list[str], key: str) -> str:
    """Per sigma: the smallest PSNR margin (dB) of ``key`` over the better baseline across the
    images, and the margin of its mean PSNR over the better baseline's mean."""
    worst, of_means = [], []
    for sigma in SIGMAS:
        worst.append(f"sigma {sigma}: {min(margin(results, name, sigma, key) for name in images):+.2f} dB")
        baseline = max(mean_score(results, images, sigma, base)[0] for base in ("gaussian", "tv"))
        of_means.append(f"{mean_score(results, images, sigma, key)[0] - baseline:+.2f}")
    return (
        f"{key}: smallest PSNR margin over the better baseline: "
        + ", ".join(worst)
        + f"; of the mean over {len(images)} images: "
        + " / ".join(of_means)
        + " dB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--weights",
        action="append",
        default=None,
        help="a shipped prior's name (conv, shearlet) or a weights file; repeatable "
        f"(default: {', '.join(DEFAULT_PRIORS)})",
    )
    parser.add_argument("--data", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-mni", "--quick", action="store_true", help="only the real scanner image (about 10 s)"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {str(spec): load_prior(spec) for spec in (args.weights or DEFAULT_PRIORS)}
    priors = list(models)
    images = held_out_images(args.data, use_mni=not args.no_mni)
    results = run(models, images, args.seed)
    print()
    print(table(results, list(images), priors))
    print()
    scanner = [name for name in images if name in SCANNER_IMAGES]
    for label in priors:
        for subset, what in ((scanner, "the held-out scanner data"), (list(images), "every image")):
            if subset:
                wins = all(margin(results, name, sigma, label) > 0 for name in subset for sigma in SIGMAS)
                print(
                    f"PoGMDM {label} beats the best Gaussian filter and the best TV in PSNR at every sigma "
                    f"on {what} ({len(subset)}): " + ("yes" if wins else "NO")
                )
    for label in priors:
        print(margins(results, list(images), label))
        print(margins(results, list(images), label + NONNEGATIVE))
    print()
    print(error_split(results, list(images), priors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
