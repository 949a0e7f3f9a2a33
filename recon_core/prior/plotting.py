"""Interpretability: draw a prior's filters and its expert potentials at several noise levels.

Also reachable as ``pogmdm-train plot --weights W --out filters.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

from recon_core.prior.mixture import mixture_potential
from recon_core.prior.model import PoGMDM


def _labels(model: PoGMDM) -> list[str]:
    labels = getattr(model.bank, "labels", None)
    return labels() if callable(labels) else [f"filter {j}" for j in range(model.num_filters)]


@torch.no_grad()
def expert_potentials(
    model: PoGMDM, sigmas: tuple[float, ...], num_points: int = 801
) -> tuple[torch.Tensor, torch.Tensor]:
    """``psi_j(y; sigma)`` on ``y`` in ``[-a, a]``, shifted to 0 at ``y = 0``.

    Returns:
        ``(y (N,), potentials (len(sigmas), J, N))``.
    """
    radius = model.experts.radius
    points = torch.linspace(-radius, radius, num_points, dtype=torch.float64)
    log_weights = model.experts.log_weights().double().cpu()
    means = model.experts.means.double().cpu()
    curves = []
    for sigma in sigmas:
        std = model.component_std(
            torch.tensor([sigma], dtype=torch.float64, device=model.experts.means.device)
        )
        std = std.double().cpu().reshape(-1, 1)
        rows = points.expand(model.num_filters, -1)
        values = mixture_potential(rows, log_weights, std, means)
        centre = values[:, num_points // 2 : num_points // 2 + 1]
        curves.append(values - centre)
    return points, torch.stack(curves)


@torch.no_grad()
def plot_prior(
    model: PoGMDM,
    path: Path | str,
    sigmas: tuple[float, ...] = (0.0, 0.025, 0.05, 0.1, 0.2, 0.4),
    filter_size: int = 33,
) -> Path:
    """Write a PNG with, per expert, its filter (image space, ``lambda_j K_j``, centred crop of
    ``filter_size`` pixels), its frequency magnitude and its potential ``psi_j(y; sigma)``.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = model.num_filters
    columns = min(count, 10 if count <= 20 else 12)
    groups = math.ceil(count / columns)
    scales = model.experts.scales.detach().double().cpu()
    gains = model.gains().detach().double().cpu()
    kernels = model.bank.impulse_responses(128).double().cpu() * scales[:, None, None]
    half = filter_size // 2
    kernels = kernels[:, 64 - half : 64 + half + 1, 64 - half : 64 + half + 1]
    spectra = torch.fft.fftshift(
        torch.fft.fft2(model.bank.impulse_responses(128).double().cpu()).abs(), dim=(-2, -1)
    )
    points, potentials = expert_potentials(model, sigmas)
    labels = _labels(model)
    figure, axes = plt.subplots(3 * groups, columns, figsize=(1.7 * columns, 1.8 * 3 * groups), squeeze=False)
    colours = plt.cm.viridis(torch.linspace(0, 0.9, len(sigmas)).numpy())
    for index in range(groups * columns):
        row, column = 3 * (index // columns), index % columns
        cells = [axes[row + offset, column] for offset in range(3)]
        if index >= count:
            for cell in cells:
                cell.axis("off")
            continue
        limit = float(kernels[index].abs().max()) or 1.0
        cells[0].imshow(kernels[index].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        cells[0].set_title(
            f"{labels[index]}\nlambda={float(scales[index]):.3g} eta={float(gains[index]):.3g}", fontsize=6
        )
        cells[1].imshow(spectra[index].numpy(), cmap="magma")
        for cell in cells[:2]:
            cell.set_xticks([])
            cell.set_yticks([])
        for level, colour in enumerate(colours):
            cells[2].plot(points.numpy(), potentials[level, index].numpy(), color=colour, linewidth=0.8)
        cells[2].set_ylim(-1.0, min(35.0, 1.05 * float(potentials[:, index].max()) + 1.0))
        cells[2].tick_params(labelsize=5)
    handles = [plt.Line2D([0], [0], color=colour) for colour in colours]
    figure.legend(
        handles, [f"sigma={sigma:g}" for sigma in sigmas], loc="lower center", ncol=len(sigmas), fontsize=8
    )
    figure.suptitle(
        f"PoGMDM ({model.config.bank}): filters lambda_j K_j, |frequency response|, "
        "potentials psi_j(y; sigma)",
        fontsize=9,
    )
    figure.tight_layout(rect=(0, 0.03, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
