"""Sampling-pattern benchmark: learned ky patterns against random and equispaced ones.

Not a test (nothing here runs under pytest). Run from the repository root::

    python bench/sampling.py --learned 4=runs/mask_r4.npy --learned 8=runs/mask_r8.npy
    python bench/sampling.py --steps 300      # designs the learned masks first

Data: the fully sampled Berkeley 8-coil brain (``../shared/data/berkeley_brain8ch``), held
out: the learned patterns are designed on the prior's training images with simulated coils
(``pogmdm-design-mask``), never on this brain. For each acceleration R (4: 45 of 180 lines
with 14 = 8 % centre lines; 8: 22 lines with 7 = 4 % centre), every pattern has the same number
of lines and the same centre block:

* learned: ``pogmdm-design-mask --lines N --centre K`` (given with ``--learned R=FILE``, else
  designed here with ``--steps``);
* VD random: :func:`~recon_core.sim.masks.variable_density_lines_mask` (density
  ``(1 - |k|)^2``), ``--seeds`` seeds;
* uniform random: the rest of the lines drawn uniformly (fastMRI style), ``--seeds`` seeds;
* equispaced + calibration: :func:`~recon_core.sim.masks.spread_lines_mask`.

Every mask is reconstructed with the project's reconstruction (``--preset``, default ``fast``),
scored as ``bench/quality.py`` does (PSNR / SSIM / NMSE over the object support after a
least-squares scale). Prints a Markdown table (random masks: mean +- std over the seeds) and
writes ``docs/figures/sampling.png`` (masks and images).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from metrics import Scores, object_support, score  # noqa: E402
from quality import DATA, load_kspace, rss_image, run_pogmdm  # noqa: E402

from recon_core.recon.config import load_preset  # noqa: E402
from recon_core.sim.mask_design import DesignConfig  # noqa: E402
from recon_core.sim.masks import random_lines_mask, spread_lines_mask, variable_density_lines_mask  # noqa: E402

FIGURE = REPO / "docs" / "figures" / "sampling.png"
BUDGETS = {4: (45, 14), 8: (22, 7)}
"""R -> (lines, centre lines) on the 180 ky lines of the brain."""
FAMILIES = ("learned", "learned_alt", "vd_random", "uniform_random", "equispaced")
LABELS = {
    "learned": "learned (pogmdm-design-mask)",
    "learned_alt": "learned (--learned-alt file)",
    "vd_random": "VD random",
    "uniform_random": "uniform random",
    "equispaced": "equispaced + calibration",
}


@dataclasses.dataclass
class Run:
    family: str
    seed: int | None
    lines: np.ndarray
    image: np.ndarray
    scores: Scores
    seconds: float


def uniform_lines(height: int, lines: int, centre: int, seed: int) -> np.ndarray:
    """``random_lines_mask`` with exactly ``lines`` lines and ``centre`` centre lines: ``(H,)`` bool."""
    mask = random_lines_mask((height, 2), height / lines, centre / height, seed=seed)[:, 0].numpy()
    if mask.sum() != lines:  # rounding of H / R: fall back to an explicit draw
        raise ValueError(f"uniform random mask has {mask.sum()} lines, expected {lines}")
    return mask


def masks_for(
    acceleration: int, height: int, learned: dict[str, np.ndarray], seeds: int
) -> list[tuple[str, int | None, np.ndarray]]:
    lines, centre = BUDGETS[acceleration]
    out: list[tuple[str, int | None, np.ndarray]] = []
    for family, mask in learned.items():
        if mask.shape != (height,) or int(mask.sum()) != lines:
            raise ValueError(f"{family} mask for R={acceleration} must be ({height},) with {lines} lines")
        out.append((family, None, mask.astype(bool)))
    for seed in range(seeds):
        out.append(
            ("vd_random", seed, variable_density_lines_mask((height, 2), lines, centre, seed)[:, 0].numpy())
        )
    for seed in range(seeds):
        out.append(("uniform_random", seed, uniform_lines(height, lines, centre, seed)))
    out.append(("equispaced", None, spread_lines_mask((height, 2), lines, centre)[:, 0].numpy()))
    return out


def learned_mask(acceleration: int, height: int, width: int, args: argparse.Namespace) -> np.ndarray:
    if acceleration in args.learned:
        return np.load(args.learned[acceleration]).astype(bool)
    from recon_core.sim.mask_design_cli import run_design

    lines, centre = BUDGETS[acceleration]
    config = DesignConfig(lines=lines, centre=centre, steps=args.steps, seed=args.design_seed)
    print(f"designing R={acceleration}: {lines} lines, centre {centre}, {args.steps} steps", flush=True)
    return run_design((width, height), config, show_progress=True).mask.numpy()


def markdown_table(results: dict[int, list[Run]]) -> str:
    rows = [
        "| R | pattern | PSNR (dB) | SSIM | NMSE | runs |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for acceleration, runs in results.items():
        for family in FAMILIES:
            chosen = [run for run in runs if run.family == family]
            if not chosen:
                continue
            psnr = np.array([run.scores.psnr for run in chosen])
            ssim = np.array([run.scores.ssim for run in chosen])
            nmse = np.array([run.scores.nmse for run in chosen])
            spread = (
                (lambda a, f: f"{a.mean():{f}} +- {a.std():{f}}")
                if len(chosen) > 1
                else (lambda a, f: f"{a[0]:{f}}")
            )
            rows.append(
                f"| {acceleration} | {LABELS[family]} | {spread(psnr, '.2f')} | {spread(ssim, '.4f')} | "
                f"{spread(nmse, '.4f')} | {len(chosen)} |"
            )
    return "\n".join(rows)


def margins(results: dict[int, list[Run]]) -> dict[int, float]:
    """Learned PSNR minus the mean PSNR of the VD random masks, per R."""
    out = {}
    for acceleration, runs in results.items():
        learned = [run.scores.psnr for run in runs if run.family == "learned"]
        random = [run.scores.psnr for run in runs if run.family == "vd_random"]
        if learned and random:
            out[acceleration] = learned[0] - float(np.mean(random))
    return out


def save_figure(results: dict[int, list[Run]], reference: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(results)
    present = {run.family for runs in results.values() for run in runs}
    shown = [
        (family, seed)
        for family, seed in [
            ("learned", None),
            ("learned_alt", None),
            ("vd_random", 0),
            ("uniform_random", 0),
            ("equispaced", None),
        ]
        if family in present
    ]
    columns = len(shown) + 1
    figure, axes = plt.subplots(
        2 * len(rows),
        columns,
        figsize=(2.3 * columns, 2.2 * 2 * len(rows)),
        height_ratios=[0.35, 1.0] * len(rows),
    )
    axes = np.atleast_2d(axes)
    peak = reference.max()
    for row, acceleration in enumerate(rows):
        mask_axes, image_axes = axes[2 * row], axes[2 * row + 1]
        for column, (family, seed) in enumerate(shown):
            run = next(
                (r for r in results[acceleration] if r.family == family and r.seed in (seed, None)), None
            )
            if run is None:
                mask_axes[column].axis("off")
                image_axes[column].axis("off")
                continue
            mask_axes[column].imshow(run.lines[None, :], cmap="gray_r", aspect="auto")
            mask_axes[column].set_title(f"R={acceleration} {LABELS[family]}", fontsize=7)
            image_axes[column].imshow(run.scores.scale * np.abs(run.image), cmap="gray", vmin=0, vmax=peak)
            image_axes[column].set_title(f"{run.scores.psnr:.2f} dB, SSIM {run.scores.ssim:.3f}", fontsize=7)
        mask_axes[-1].axis("off")
        image_axes[-1].imshow(reference, cmap="gray", vmin=0, vmax=peak)
        image_axes[-1].set_title("reference (fully sampled)", fontsize=7)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="fully sampled cfl file (kx, ky, coils)")
    parser.add_argument(
        "--learned",
        action="append",
        default=[],
        metavar="R=FILE",
        help="a learned (NY,) bool mask for acceleration R (4 or 8); else designed here",
    )
    parser.add_argument(
        "--learned-alt",
        action="append",
        default=[],
        metavar="R=FILE",
        help="a second learned mask for R (other design settings or seed), shown beside",
    )
    parser.add_argument("--accelerations", default="4,8")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of each random family")
    parser.add_argument("--steps", type=int, default=DesignConfig(lines=1).steps, help="design steps")
    parser.add_argument("--design-seed", type=int, default=0)
    parser.add_argument("--families", default=",".join(FAMILIES), help=f"subset of {','.join(FAMILIES)}")
    parser.add_argument("--preset", default="fast", help="reconstruction preset (same for every mask)")
    parser.add_argument("--figure", default=str(FIGURE), help="PNG to write ('' for none)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.accelerations = [int(a) for a in args.accelerations.split(",") if a.strip()]
    for acceleration in args.accelerations:
        if acceleration not in BUDGETS:
            parser.error(f"acceleration must be one of {sorted(BUDGETS)}, got {acceleration}")
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    for family in args.families:
        if family not in FAMILIES:
            parser.error(f"unknown family {family!r}")
    args.learned = {int(item.split("=", 1)[0]): Path(item.split("=", 1)[1]) for item in args.learned}
    args.learned_alt = {int(item.split("=", 1)[0]): Path(item.split("=", 1)[1]) for item in args.learned_alt}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kspace = load_kspace(args.data)
    height, width = kspace.shape[1:]
    reference = rss_image(kspace)
    support = object_support(reference)
    config = load_preset(args.preset)
    results: dict[int, list[Run]] = {}
    for acceleration in args.accelerations:
        learned = {"learned": learned_mask(acceleration, height, width, args)}
        if acceleration in args.learned_alt:
            learned["learned_alt"] = np.load(args.learned_alt[acceleration]).astype(bool)
        results[acceleration] = []
        for family, seed, lines in masks_for(acceleration, height, learned, args.seeds):
            if family not in args.families:
                continue
            mask = np.repeat(lines[:, None], width, axis=1)
            start = time.perf_counter()
            image, _, _, _ = run_pogmdm(kspace, mask, config, None)
            run = Run(
                family, seed, lines, image, score(image, reference, support), time.perf_counter() - start
            )
            print(
                f"R={acceleration} {family} seed {seed}: PSNR {run.scores.psnr:.2f}  "
                f"SSIM {run.scores.ssim:.4f}  ({run.seconds:.0f} s)",
                flush=True,
            )
            results[acceleration].append(run)
    print()
    print(markdown_table(results))
    for acceleration, margin in margins(results).items():
        print(f"R={acceleration}: learned - mean(VD random) = {margin:+.2f} dB PSNR")
    if args.figure:
        save_figure(results, reference, Path(args.figure))
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
