"""Denoising score matching for the PoGMDM prior.

Loss per image (``x`` clean, ``n ~ N(0, I)``, ``sigma ~ U(0, sigma_max)``, or log-uniform on
``[sigma_min, sigma_max]``, the geometric schedule of the sampler), averaged over the
pixels of the patch interior and the batch::

    L = || sigma * grad_x E(x + sigma n, sigma) - n ||^2  =  || x_hat - x ||^2 / sigma^2

(``x_hat`` the Tweedie denoiser), so the loss is the denoising MSE in units of the noise
variance: 1 for a prior that does nothing. Patches carry a ``margin`` of context around the
interior on which the loss is taken, so the periodic boundary of the FFT filters does not
teach the prior about artificial edges.

``psi'`` is tabulated at each step's noise levels (exact values at up to ``table_points``
nodes per expert, at least 16 per component width ``s`` where that takes fewer; the values
are differentiable in the weights) and interpolated: the error is far below the loss noise,
and it avoids ``K = 125`` exponentials per response, which would make a step about 10 times
slower on a CPU. Every step draws its data and noise from generators
seeded by ``(seed, step)``, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from recon_core.prior.model import PoGMDM, PoGMDMConfig
from recon_core.training.checkpoint import CheckpointState, has_checkpoint, load_checkpoint, save_checkpoint
from recon_core.training.data import ImageSource, PatchSampler, describe


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
        steps: optimiser steps in total (a resumed run continues to this count).
        batch_size: patches per step.
        levels_per_step: distinct noise levels per step (patches share them in turn; each
            level costs one ``psi'`` table per expert).
        crop_size: side of the patch interior on which the loss is taken.
        margin: context pixels around the interior.
        sigma_max: noise levels are drawn from ``U(0, sigma_max)`` (``sigma_sampling="uniform"``,
            the spec) or log-uniformly on ``[sigma_min, sigma_max]`` (``"log-uniform"``: the
            sampler's geometric schedule 0.4 .. 0.01 and the MAP levels 0.1 .. 0.02 spend most
            of their steps at small ``sigma``, which ``U(0, 0.4)`` rarely draws).
        sigma_min: lower end of the log-uniform range.
        sigma_sampling: ``"uniform"`` or ``"log-uniform"``.
        lr_weights, lr_filters, lr_scales: Adam learning rates of the mixture weights, the
            filter parameters and the expert scales ``lambda``. The source's 1e-4 / 5e-5 suit
            its 25k steps; for a CPU budget of a few thousand steps 10x is better (measured,
            shearlets, seed 0: mean loss over steps 500-600 0.212 at 1e-3 / 5e-4 / 3e-2
            against 0.378 over steps 400-500 at 1e-4 / 5e-5 / 1e-2). ``lambda`` is of order
            10, hence its larger rate.
        lr_gains: Adam learning rate of the log gains ``log eta_j`` (``gain="learned"`` only).
        lr_decay: ``"cosine"``: every rate follows ``f + (1 - f) (1 + cos(pi t / T)) / 2`` of
            its value at step ``t`` of ``T`` (``f = final_lr_fraction``); ``"none"``: constant.
            Measured: with constant rates the loss stalls at about 0.15 after 2500 steps.
        final_lr_fraction: ``f`` above.
        table_points: nodes of the ``psi'`` tables.
        min_patch_peak: patches whose maximum is below this are redrawn (a few times), so
            steps are not spent on empty background; 0 keeps every patch.
        seed: seed of every random draw.
        checkpoint_every: steps between checkpoints (0: only at the end).
        model: the architecture.
    """

    steps: int = 2000
    batch_size: int = 8
    levels_per_step: int = 4
    crop_size: int = 64
    margin: int = 16
    sigma_max: float = 0.4
    sigma_min: float = 0.01
    sigma_sampling: Literal["uniform", "log-uniform"] = "uniform"
    lr_weights: float = 1e-3
    lr_filters: float = 5e-4
    lr_scales: float = 3e-2
    lr_gains: float = 1e-2
    lr_decay: Literal["none", "cosine"] = "cosine"
    final_lr_fraction: float = 0.05
    table_points: int = 1025
    min_patch_peak: float = 0.1
    seed: int = 0
    checkpoint_every: int = 250
    model: PoGMDMConfig = field(default_factory=PoGMDMConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "levels_per_step", "crop_size", "table_points"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.margin < 0 or self.sigma_max <= 0:
            raise ValueError("margin must be >= 0 and sigma_max > 0")
        if self.sigma_sampling not in ("uniform", "log-uniform"):
            raise ValueError(
                f"sigma_sampling must be 'uniform' or 'log-uniform', got {self.sigma_sampling!r}"
            )
        if self.sigma_sampling == "log-uniform" and not 0 < self.sigma_min < self.sigma_max:
            raise ValueError("log-uniform sampling needs 0 < sigma_min < sigma_max")
        if self.lr_decay not in ("none", "cosine") or not 0.0 < self.final_lr_fraction <= 1.0:
            raise ValueError("lr_decay must be 'none' or 'cosine' and 0 < final_lr_fraction <= 1")

    def noise_levels(self, generator: torch.Generator) -> Tensor:
        """``(levels_per_step,)`` noise levels of one step (float32, CPU)."""
        uniform = torch.rand(self.levels_per_step, generator=generator)
        if self.sigma_sampling == "uniform":
            return uniform * self.sigma_max
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** uniform

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of every learning rate at (0-based) ``step``."""
        if self.lr_decay == "none":
            return 1.0
        progress = min(1.0, step / max(1, self.steps))
        return self.final_lr_fraction + (1.0 - self.final_lr_fraction) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    @property
    def patch_size(self) -> int:
        return self.crop_size + 2 * self.margin

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "model": self.model.to_dict()}


@dataclass(frozen=True)
class TrainResult:
    """The trained model, one loss per step (all steps, also those before a resume) and the
    wall time of this invocation."""

    model: PoGMDM
    losses: list[float]
    wall_seconds: float

    def final_loss(self, window: int = 100) -> float:
        """Mean loss over the last ``window`` steps."""
        tail = self.losses[-window:]
        return float(np.mean(tail)) if tail else math.nan


def step_generators(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """The generators of one step (data, noise), a function of ``(seed, step)`` only."""
    return np.random.default_rng([seed, step]), torch.Generator().manual_seed(seed * 1_000_003 + step)


def dsm_loss(
    model: PoGMDM,
    clean: Tensor,
    levels: Tensor,
    group: Tensor,
    noise: Tensor,
    table_points: int,
    margin: int,
    nodes_per_std: float | None = 16.0,
) -> Tensor:
    """Denoising score-matching loss (see the module docstring) with tabulated ``psi'``.

    Args:
        clean: ``(B, H, W)`` patches.
        levels: ``(G,)`` the step's noise levels (one table each).
        group: ``(B,)`` long, the level of every patch.
        noise: ``(B, H, W)`` standard normal.
    """
    tables = model.tables(levels, table_points, nodes_per_std)
    sigma = levels[group]
    score = model.score_tabulated(clean + sigma[:, None, None] * noise, sigma, tables, group)
    residual = -sigma[:, None, None] * score - noise
    if margin > 0:
        residual = residual[:, margin:-margin, margin:-margin]
    return residual.square().mean()


@torch.no_grad()
def initialise_from_data(model: PoGMDM, sampler: PatchSampler, seed: int, device: torch.device) -> None:
    """Data-driven start: ``lambda_j`` puts the 99th percentile of the clean responses at
    ``a / 2``; the weights are the symmetrised histogram of those responses on the grid
    (bin width ``sigma_0``), lightly smoothed, so the clean expert densities fit the data."""
    patches = torch.from_numpy(sampler.sample(32, np.random.default_rng([seed, 2**31]))).to(device)
    model.experts.scales.fill_(1.0)
    responses = model.responses(patches).transpose(0, 1).flatten(1)
    responses = responses[:, :: max(1, responses.shape[1] // 200_000)]
    quantiles = torch.quantile(responses.abs(), 0.99, dim=1)
    model.experts.scales.copy_(0.5 * model.experts.radius / quantiles.clamp(min=1e-6))
    scaled = responses * model.experts.scales[:, None]
    experts = model.experts
    bins = torch.round((scaled + experts.radius) / experts.spacing).long()
    inside = (bins >= 0) & (bins < experts.num_components)
    counts = torch.zeros(experts.num_experts, experts.num_components, device=device)
    counts.scatter_add_(1, bins.clamp(0, experts.num_components - 1), inside.to(counts.dtype))
    counts = 0.5 * (counts + counts.flip(-1))
    kernel = torch.tensor([0.25, 0.5, 0.25], device=device).reshape(1, 1, 3)
    smoothed = torch.nn.functional.conv1d(counts.unsqueeze(1), kernel, padding=1).squeeze(1)
    histogram = smoothed / smoothed.sum(dim=-1, keepdim=True) + 1e-6
    experts.half_weights.copy_(histogram[:, experts.num_components // 2 :])
    model.project_()


def make_optimizer(model: PoGMDM, config: TrainConfig) -> torch.optim.Adam:
    """Adam with a parameter group each for the mixture weights, the filters, the expert scales
    and (learned gains only) the log gains; every group's undecayed rate is its ``base_lr``."""
    groups = [
        ([model.experts.half_weights], config.lr_weights),
        (list(model.bank.parameters()), config.lr_filters),
        ([model.experts.scales], config.lr_scales),
    ]
    if model.log_gains is not None:
        groups.append(([model.log_gains], config.lr_gains))
    return torch.optim.Adam([{"params": params, "lr": rate, "base_lr": rate} for params, rate in groups])


def train(
    config: TrainConfig,
    sources: list[ImageSource],
    out_dir: Path,
    device: torch.device,
    resume: bool = False,
    progress: Callable[[int, int], object] | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or continue training) a prior; checkpoints go to ``out_dir``.

    Args:
        config: the run's settings.
        sources: training images.
        out_dir: checkpoint directory.
        device: where to train.
        resume: continue from the checkpoint in ``out_dir`` (error if there is none).
        progress: optional factory ``(initial, total) -> tqdm-like`` with ``update`` and
            ``set_postfix``; ``None`` for silence.
        stop_after: stop (with a checkpoint) after this many steps of this call, e.g. to split
            a run into jobs; ``--resume`` continues it exactly.
    """
    start_time = time.perf_counter()
    sampler = PatchSampler(sources, config.patch_size, min_peak=config.min_patch_peak)
    torch.manual_seed(config.seed)
    model = PoGMDM(config.model).to(device)
    optimizer = make_optimizer(model, config)
    info = {"train_config": config.to_dict(), "data": describe(sources)}
    if resume:
        if not has_checkpoint(out_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {out_dir}")
        state = load_checkpoint(out_dir, model, optimizer)
        if state.info.get("train_config", {}).get("model") != config.model.to_dict():
            raise ValueError("the checkpoint was made with a different model configuration")
    else:
        initialise_from_data(model, sampler, config.seed, device)
        state = CheckpointState(0, [], info)
    losses = list(state.losses)
    bar = progress(state.step, config.steps) if progress is not None else None
    base_rates = [group["base_lr"] for group in optimizer.param_groups]
    last = config.steps if stop_after is None else min(config.steps, state.step + stop_after)
    for step in range(state.step, last):
        for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
            group["lr"] = rate * config.learning_rate_factor(step)
        data_rng, noise_rng = step_generators(config.seed, step)
        clean = torch.from_numpy(sampler.sample(config.batch_size, data_rng)).to(device)
        levels = config.noise_levels(noise_rng).to(device)
        group = torch.arange(config.batch_size, device=device) % config.levels_per_step
        noise = torch.randn(clean.shape, generator=noise_rng).to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = dsm_loss(model, clean, levels, group, noise, config.table_points, config.margin)
        loss.backward()
        optimizer.step()
        model.project_()
        losses.append(float(loss.detach()))
        done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if done == last or (config.checkpoint_every and done % config.checkpoint_every == 0):
            save_checkpoint(out_dir, model, optimizer, CheckpointState(done, losses, info))
    if bar is not None and hasattr(bar, "close"):
        bar.close()
    model.requires_grad_(False)
    return TrainResult(model.eval(), losses, time.perf_counter() - start_time)
