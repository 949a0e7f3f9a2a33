"""``pogmdm-design-mask``: learn which phase-encode lines a Cartesian protocol acquires.

    pogmdm-design-mask --shape 230 180 --lines 45 --centre 14 -o mask_r4.npy --png mask_r4.png

``--shape NX NY``: readout samples, then phase-encode lines; the pattern undersamples the
second axis (ky) only. Writes ``MASK.npy`` (bool ``(NY,)``, exactly N ``True``), ``MASK.txt``
(the acquired line indices, 0-based with the k-space centre at ``NY // 2``, and their offsets
from the centre) and, with ``--png``, a picture of the pattern and its point-spread function.

The pattern is optimised on the prior's training images (:mod:`recon_core.training.data`:
the MR slices shipped in public wheels, or ``--data FOLDER``) seen through ``--coils``
simulated smooth coils; see :mod:`recon_core.sim.mask_design` for the method. The same seed gives
the same pattern (on the same machine and torch version).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from recon_core.physics.fourier import centred_ifft
from recon_core.sim.mask_design import DesignConfig, DesignResult, check_design, design_mask


def _progress_bar(
    total: int, enabled: bool
) -> tuple[Callable[[int, float], None] | None, Callable[[], None]]:
    """A tqdm bar on stderr (``(callback, close)``), or nothing."""
    if not enabled or total == 0:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="pogmdm-design-mask", unit="step", file=sys.stderr)

    def update(_step: int, loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3g}", refresh=False)
        bar.update(1)

    return update, bar.close


def run_design(
    shape_nx_ny: tuple[int, int],
    config: DesignConfig,
    coils: int = 8,
    prior: str = "shearlet",
    data: Path | None = None,
    show_progress: bool = False,
) -> DesignResult:
    """Design a pattern for an ``NX x NY`` (readout x phase-encode) grid: the library entry
    behind the command (also used by ``bench/sampling.py``).

    Raises:
        ValueError: for a line budget or grid the design cannot handle.
    """
    from recon_core.prior import load_prior
    from recon_core.sim.mask_design_data import TrainingExamples
    from recon_core.training.data import folder_sources, wheel_sources

    readout, lines = shape_nx_ny
    shape = check_design((lines, readout), config.lines, config.centre)
    sources = folder_sources(data) if data is not None else wheel_sources()
    examples = TrainingExamples(sources, shape, coils)
    model = load_prior(prior).tabulated()
    progress, close = _progress_bar(config.steps, show_progress)
    try:
        return design_mask(model, examples, shape, config, progress)
    finally:
        close()


def write_line_list(path: Path, mask: np.ndarray, header: str) -> None:
    """One acquired line a row: index (0-based, centre at ``NY // 2``) and offset from the centre."""
    centre = mask.shape[0] // 2
    rows = [f"{index} {index - centre:+d}" for index in np.flatnonzero(mask)]
    path.write_text(f"# {header}\n# index offset_from_centre (centre = {centre})\n" + "\n".join(rows) + "\n")


def point_spread(mask: np.ndarray) -> np.ndarray:
    """``|PSF|`` of a ky line mask ``(NY,)``, normalised to 1 at the centre, centred."""
    psf = centred_ifft(mask.astype(np.complex128), 0)
    return np.abs(psf) / max(np.abs(psf).max(), 1e-30)


def save_pattern_png(path: Path, mask: np.ndarray, title: str) -> None:
    """The pattern (acquired lines in black) above its point-spread function (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = mask.shape[0]
    offsets = np.arange(lines) - lines // 2
    psf = point_spread(mask)
    side = psf.copy()
    side[lines // 2] = 0.0
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6.0, 3.8), height_ratios=(1, 2))
    top.imshow(
        mask[None, :], cmap="gray_r", aspect="auto", extent=(offsets[0] - 0.5, offsets[-1] + 0.5, 0, 1)
    )
    top.set_yticks([])
    top.set_title(textwrap.fill(title, 80), fontsize=8)
    top.set_xlabel("ky offset from centre (lines)", fontsize=8)
    bottom.semilogy(offsets, np.maximum(psf, 1e-4), lw=0.8)
    bottom.set_ylim(1e-3, 1.5)
    bottom.set_xlabel("image offset (pixels along phase encoding)", fontsize=8)
    bottom.set_ylabel("|PSF|", fontsize=8)
    bottom.set_title(f"point-spread function: largest side lobe {side.max():.3f}", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pogmdm-design-mask", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shape",
        type=int,
        nargs=2,
        required=True,
        metavar=("NX", "NY"),
        help="readout samples NX, phase-encode lines NY (the undersampled axis)",
    )
    parser.add_argument("--lines", type=int, required=True, metavar="N", help="lines to acquire (1..NY)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="MASK.npy")
    parser.add_argument(
        "--centre",
        type=int,
        default=0,
        metavar="K",
        help="contiguous centre lines always acquired (part of N; default 0)",
    )
    parser.add_argument("--coils", type=int, default=8, metavar="C", help="simulated coils (default 8)")
    parser.add_argument(
        "--png", type=Path, default=None, metavar="P", help="picture of the pattern and its PSF"
    )
    defaults = DesignConfig(lines=1)
    parser.add_argument("--steps", type=int, default=defaults.steps, metavar="S")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="S")
    parser.add_argument("--batch", type=int, default=defaults.batch, help="training images per step")
    parser.add_argument(
        "--noise-std",
        type=float,
        default=defaults.noise_std,
        help="simulated k-space noise std (images scaled to max 1)",
    )
    parser.add_argument(
        "--estimator",
        choices=("diffused", "data"),
        default=defaults.estimator,
        help="the estimate whose error is minimised: one Tweedie step from a diffused image "
        "(default) or three Tweedie + data-consistency steps from the data alone",
    )
    parser.add_argument("--prior", default="shearlet", help="shipped prior name or .safetensors file")
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="folder of training images (.npy/.png/.h5) instead of the wheel images",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    readout, lines = args.shape
    try:
        check_design((lines, readout), args.lines, args.centre)
        config = DesignConfig(
            lines=args.lines,
            centre=args.centre,
            steps=args.steps,
            batch=args.batch,
            noise_std=args.noise_std,
            estimator=args.estimator,
            seed=args.seed,
        )
    except ValueError as error:
        parser.error(str(error))
    if args.coils < 1:
        parser.error(f"--coils must be >= 1, got {args.coils}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    result = run_design((readout, lines), config, args.coils, args.prior, args.data, not args.no_progress)
    mask = result.mask.numpy()
    output = args.output if args.output.suffix == ".npy" else args.output.with_suffix(".npy")
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, mask)
    header = (
        f"pogmdm-design-mask: {int(mask.sum())} of {lines} phase-encode lines "
        f"(R = {lines / mask.sum():.2f}), "
        f"readout {readout}, centre {args.centre}, coils {args.coils}, steps {args.steps}, seed {args.seed}"
    )
    write_line_list(output.with_suffix(".txt"), mask, header)
    if args.png is not None:
        save_pattern_png(args.png, mask, header.removeprefix("pogmdm-design-mask: "))
    print(
        f"{header}\nwrote {output} and {output.with_suffix('.txt')}"
        + (f" and {args.png}" if args.png else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
