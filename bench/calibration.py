"""Calibration benchmark of the posterior std map: does it predict the error of the mean?

Not a test. Run from the repository root::

    python bench/calibration.py                        # masks a-d; balanced, posterior_pc, jackknife
    python bench/calibration.py --masks a,b --presets posterior_pc --set num_chains=8

Data and masks are those of ``bench/quality.py`` (the Berkeley 8-coil brain, retrospectively
undersampled). For every mask and posterior preset, over the object support and after the
least-squares scale ``a`` of the mean to the reference (``bench/metrics.py``, applied to the std
as well):

* PSNR / SSIM of the posterior mean;
* Spearman rank correlation between the std and ``|error|`` of the mean;
* coverage: the fraction of object pixels with ``|error| <= k std``, at k = 2 in the table and
  for k in [0, 4] in the calibration curve (a Gaussian error of exactly that std would give
  ``erf(k / sqrt(2))``, 95.4 % at k = 2);
* seconds per slice and number of chains;
* two oracle bounds on the Spearman correlation, both computed from the *actual* error: that of
  ``|error|`` with the RMS of the error over each pixel's 3 x 3 neighbourhood, the pixel itself
  left out, and with the RMS of its two neighbours along the readout (x, the fully sampled
  direction, along which the residual aliasing of line masks is coherent). A std map as smooth
  as the error's local level cannot rank the pixels much better than these: where the error is
  noise-like from pixel to pixel (mask (a)) the 3 x 3 oracle stays below the 0.5 target and the
  readout pair, which knows the adjacent pixels' own errors, only just reaches it.

Prints a Markdown table and writes ``docs/figures/calibration.png`` (mean, |error| and 2 std on
one logarithmic colour scale, 0.01 to 30 % of the reference maximum, so that a map far below or
above the error still shows its structure, and the calibration curves).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from metrics import Scores, object_support, score  # noqa: E402
from quality import DATA, MASKS, load_kspace, rss_image, run_pogmdm  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from recon_core.recon.config import config_from_mapping, load_preset  # noqa: E402

FIGURE = REPO / "docs" / "figures" / "calibration.png"
K_GRID = np.linspace(0.0, 4.0, 41)
MAP_SCALE_PERCENT = (0.01, 30.0)  # one log colour scale for |error| and 2 std, % of the reference maximum


@dataclasses.dataclass
class Calibration:
    """One reconstruction's calibration: ``coverage[i]`` is the fraction within ``K_GRID[i]`` std."""

    scores: Scores
    spearman: float
    coverage: np.ndarray
    oracle_spearman: float
    readout_oracle_spearman: float
    seconds: float
    chains: int
    image: np.ndarray
    error: np.ndarray
    std: np.ndarray

    def coverage_at(self, k: float) -> float:
        return float(np.interp(k, K_GRID, self.coverage))


def calibrate(
    image: np.ndarray,
    std: np.ndarray,
    reference: np.ndarray,
    support: np.ndarray,
    seconds: float,
    chains: int,
) -> Calibration:
    """Scores, Spearman and coverage curve of a mean ``image`` and its ``std`` (both ``(H, W)``)."""
    scores = score(image, reference, support)
    error = np.abs(scores.scale * np.abs(image) - reference)
    scaled_std = scores.scale * std
    spearman = float(spearmanr(scaled_std[support], error[support]).statistic)
    ratio = error[support] / np.maximum(scaled_std[support], 1e-30)
    coverage = np.array([float((ratio <= k).mean()) for k in K_GRID])
    oracles = [
        float(spearmanr(neighbourhood_rms(error, window)[support], error[support]).statistic)
        for window in ((3, 3), (1, 3))
    ]
    return Calibration(scores, spearman, coverage, *oracles, seconds, chains, image, error, scaled_std)


def neighbourhood_rms(error: np.ndarray, window: tuple[int, int] = (3, 3)) -> np.ndarray:
    """``(H, W)`` RMS of ``error`` over each pixel's ``window`` (rows, columns; odd) neighbourhood
    without the pixel itself (the oracles of :func:`calibrate`; edges padded by reflection)."""
    from scipy.ndimage import uniform_filter

    count = window[0] * window[1]
    if count < 2 or window[0] % 2 == 0 or window[1] % 2 == 0:
        raise ValueError(f"window must be odd sizes holding at least 2 pixels, got {window}")
    squares = error.astype(np.float64) ** 2
    total = uniform_filter(squares, window, mode="reflect") * count
    return np.sqrt(np.maximum(total - squares, 0.0) / (count - 1))


def markdown_table(results: dict[str, dict[str, Calibration]]) -> str:
    lines = [
        "| mask | preset | PSNR (dB) | SSIM | Spearman(std, abs error) | oracle 3 x 3 | "
        "oracle readout pair | within 2 std | within 1 std | s / slice | chains |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, by_preset in results.items():
        for preset, c in by_preset.items():
            lines.append(
                f"| ({key}) {MASKS[key][0]} | {preset} | {c.scores.psnr:.2f} | {c.scores.ssim:.4f} | "
                f"{c.spearman:.2f} | {c.oracle_spearman:.2f} | {c.readout_oracle_spearman:.2f} | "
                f"{100 * c.coverage_at(2.0):.1f} % | "
                f"{100 * c.coverage_at(1.0):.1f} % | "
                f"{c.seconds:.0f} | {c.chains} |"
            )
    return "\n".join(lines)


def save_figure(
    results: dict[str, dict[str, Calibration]], reference: np.ndarray, support: np.ndarray, path: Path
) -> None:
    """The figure of the module docstring; ``support`` is the object mask the maps are shown on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    rows = [(key, preset) for key, by_preset in results.items() for preset in by_preset]
    figure, axes = plt.subplots(
        len(rows), 4, figsize=(12.0, 3.0 * len(rows)), squeeze=False, gridspec_kw={"wspace": 0.45}
    )
    peak = float(reference.max())
    percent = 100.0 / peak  # maps shown in % of the reference maximum
    low, high = MAP_SCALE_PERCENT
    scale = LogNorm(vmin=low, vmax=high)
    colours = matplotlib.colormaps["magma"].with_extremes(bad="black")  # black: outside the object

    def on_object(values: np.ndarray) -> np.ndarray:
        return np.where(support, np.clip(percent * values, low, high), np.nan)

    for row, (key, preset) in enumerate(rows):
        c = results[key][preset]
        image_axis, error_axis, std_axis, curve_axis = axes[row]
        image_axis.imshow(c.scores.scale * np.abs(c.image), cmap="gray", vmin=0, vmax=peak)
        image_axis.set_title(f"({key}) {preset}: mean, {c.scores.psnr:.1f} dB", fontsize=8)
        error_axis.imshow(on_object(c.error), cmap=colours, norm=scale)
        error_axis.set_title(f"|error|, {low:g} to {high:g} % of max (log)", fontsize=8)
        shown = std_axis.imshow(on_object(2.0 * c.std), cmap=colours, norm=scale)
        std_axis.set_title(f"2 std, same scale; rho {c.spearman:.2f}", fontsize=8)
        bar = figure.colorbar(shown, ax=std_axis, fraction=0.046, pad=0.02)
        bar.ax.tick_params(labelsize=6)
        for axis in (image_axis, error_axis, std_axis):
            axis.set_xticks([])
            axis.set_yticks([])
        gaussian = [math.erf(k / math.sqrt(2.0)) for k in K_GRID]
        curve_axis.plot(K_GRID, gaussian, "k--", linewidth=1, label="Gaussian, exact std")
        curve_axis.plot(K_GRID, c.coverage, linewidth=1.5, label=preset)
        curve_axis.axvline(2.0, color="grey", linewidth=0.5)
        curve_axis.set_xlim(0, 4)
        curve_axis.set_ylim(0, 1)
        curve_axis.set_xlabel("k", fontsize=8)
        curve_axis.set_ylabel("fraction |error| <= k std", fontsize=8)
        curve_axis.set_title(f"calibration: {100 * c.coverage_at(2.0):.1f} % within 2 std", fontsize=8)
        curve_axis.legend(fontsize=6, loc="lower right")
        curve_axis.tick_params(labelsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA, help="fully sampled cfl file (kx, ky, coils)")
    parser.add_argument("--masks", default="a,b,c,d", help=f"comma-separated subset of {','.join(MASKS)}")
    parser.add_argument(
        "--presets", default="balanced,posterior_pc,jackknife", help="comma-separated std-map presets"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    parser.add_argument("--figure", default=str(FIGURE), help="PNG to write ('' for none)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    args.masks = [m.strip() for m in args.masks.split(",") if m.strip()]
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    for key in args.masks:
        if key not in MASKS:
            parser.error(f"unknown mask {key!r}")
    args.overrides = dict(item.split("=", 1) for item in args.set)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    kspace = load_kspace(args.data)
    reference = rss_image(kspace)
    support = object_support(reference)
    results: dict[str, dict[str, Calibration]] = {}
    for key in args.masks:
        mask = MASKS[key][1]((kspace.shape[1], kspace.shape[2])).numpy()
        results[key] = {}
        for preset in args.presets:
            config = config_from_mapping(args.overrides, load_preset(preset))
            if config.method == "map":
                raise SystemExit(f"preset {preset!r} is a MAP preset: no std map to calibrate")
            image, std, seconds, info = run_pogmdm(kspace, mask, config, None)
            assert std is not None
            c = calibrate(image, std, reference, support, seconds, int(info["num_chains"]))
            results[key][preset] = c
            print(
                f"({key}) {preset}: PSNR {c.scores.psnr:.2f}  Spearman {c.spearman:.3f} "
                f"(oracles {c.oracle_spearman:.3f}, {c.readout_oracle_spearman:.3f})  "
                f"2 std {100 * c.coverage_at(2.0):.1f} %  {seconds:.0f} s",
                flush=True,
            )
    print()
    print(markdown_table(results))
    if args.figure:
        save_figure(results, reference, support, Path(args.figure))
        print(f"figure: {args.figure}")
    if args.json is not None:
        payload = {
            key: {
                preset: {
                    **dataclasses.asdict(c.scores),
                    "spearman": c.spearman,
                    "oracle_spearman": c.oracle_spearman,
                    "readout_oracle_spearman": c.readout_oracle_spearman,
                    "coverage_2std": c.coverage_at(2.0),
                    "coverage_curve": dict(zip(K_GRID.round(2).tolist(), c.coverage.tolist(), strict=True)),
                    "seconds": c.seconds,
                    "chains": c.chains,
                }
                for preset, c in by_preset.items()
            }
            for key, by_preset in results.items()
        }
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
