"""The shipped demo against its ground truth: what a new user's first image should look like.

Not a test (``tests/test_demo_quality.py`` bounds the NMSE). Run from the repository root::

    python bench/demo.py                      # fast preset, writes docs/figures/demo.png
    python bench/demo.py --preset balanced --figure /tmp/demo_balanced.png

Reads the demo raw file (``gadgets/demo/pogmdm_demo.h5``: 96 x 96, 8 coils, equispaced R=3 plus
24 calibration lines, correlated coil noise with a pre-scan) through the same assembly as the
gadget, reconstructs it and compares the magnitude with the simulated truth (the phantom times
the RSS of the simulated coils), after a least-squares scale. Prints the NMSE of the
zero-filled RSS and of the reconstruction, and a ghost coefficient per FOV/3 shift: the
least-squares weight of the truth's edges shifted by a third of the field of view along ky
in the error image (0 = no FOV/3 ghost; a copy of every edge at full strength would be 1).
The figure shows truth, zero-filled, reconstruction (same grey scale) and |error| x 5.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import ismrmrd
import torch
from torch import Tensor

from gadgets.assembly import SliceAssembler, assemble_slice
from gadgets.demo.synthetic import demo_raw_file, ground_truth
from gadgets.encoding import encoding_from_header, parse_header
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator
from recon_core.recon.config import load_preset
from recon_core.recon.reconstruction import reconstruct

REPO = Path(__file__).resolve().parents[1]
FIGURE = REPO / "docs" / "figures" / "demo.png"


def demo_slice() -> tuple[KSpaceSlice, Tensor]:
    """The demo's assembled slice and its ground-truth magnitude ``(96, 96)``."""
    with ismrmrd.Dataset(str(demo_raw_file()), "dataset", create_if_needed=False) as dataset:
        header = bytes(dataset.read_xml_header())
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    encoding = encoding_from_header(parse_header(header))
    assembler = SliceAssembler(encoding)
    slices = [data for data in map(assembler.add, acquisitions) if data is not None] + assembler.flush()
    return assemble_slice(slices[0], encoding).kspace, ground_truth()


def scaled(estimate: Tensor, truth: Tensor) -> Tensor:
    """``estimate`` times its least-squares scale to ``truth``."""
    estimate = estimate.double()
    return estimate * (estimate * truth.double()).sum() / (estimate * estimate).sum()


def nmse(estimate: Tensor, truth: Tensor) -> float:
    truth = truth.double()
    return float(((scaled(estimate, truth) - truth) ** 2).sum() / (truth**2).sum())


def ghost_coefficients(estimate: Tensor, truth: Tensor) -> tuple[float, float]:
    """Least-squares weights of the truth's edges shifted by +-FOV/3 along ky in the error."""
    truth = truth.double()
    error = scaled(estimate, truth) - truth
    edges = truth - torch.nn.functional.avg_pool2d(truth[None, None], 5, 1, 2)[0, 0]
    shift = truth.shape[0] // 3
    weights = []
    for rows in (shift, -shift):
        ghost = torch.roll(edges, rows, 0)
        weights.append(float((error * ghost).sum() / (ghost * ghost).sum()))
    return weights[0], weights[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="override a config field"
    )
    parser.add_argument("--figure", default=str(FIGURE), help="PNG to write ('' for none)")
    args = parser.parse_args(argv)
    config = load_preset(args.preset)
    for item in args.set:
        name, value = item.split("=", 1)
        config = dataclasses.replace(config, **{name: type(getattr(config, name))(value)})
    kspace, truth = demo_slice()
    zero_filled = FFT2Operator().adjoint(kspace.kspace.to(torch.complex64)).abs().pow(2).sum(0).sqrt()
    result = reconstruct(kspace, config)
    print("| image | NMSE | ghost +FOV/3 | ghost -FOV/3 |")
    print("|---|---:|---:|---:|")
    for name, image in (("zero-filled RSS", zero_filled), (f"PoGMDM {args.preset}", result.image)):
        plus, minus = ghost_coefficients(image, truth)
        print(f"| {name} | {nmse(image, truth):.4f} | {plus:.3f} | {minus:.3f} |")
    info = result.info
    print(f"coil start {info['coil_start']}, sigma_n {info['noise_std_normalised']:.4f} of the scale")
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        top = float(truth.max())
        panels = (
            ("truth", truth, top),
            ("zero-filled RSS", scaled(zero_filled, truth), top),
            (f"PoGMDM {args.preset}", scaled(result.image, truth), top),
            ("|error| x 5", (scaled(result.image, truth) - truth.double()).abs() * 5, top),
        )
        figure, axes = plt.subplots(1, 4, figsize=(12, 3.3))
        for axis, (title, image, vmax) in zip(axes, panels, strict=True):
            axis.imshow(image.numpy(), cmap="gray", vmin=0.0, vmax=vmax)
            axis.set_title(title)
            axis.axis("off")
        figure.tight_layout()
        figure.savefig(args.figure, dpi=100)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
