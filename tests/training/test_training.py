"""Training: the ``pogmdm-train`` CLI on a tiny folder, checkpoint + resume determinism, the
data readers and the interpretability plot."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import matplotlib.image
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from recon_core.prior import load_prior
from recon_core.sim.phantom import shepp_logan
from recon_core.training.cli import main
from recon_core.training.data import PatchSampler, folder_sources
from recon_core.training.trainer import TrainConfig

TINY = ["--crop-size", "16", "--margin", "4", "--batch-size", "2", "--table-points", "65", "--device", "cpu"]


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """Three small MR-like images: a phantom (.npy), a 3D stack (.npy) and a PNG."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    phantom = shepp_logan(40).numpy()
    np.save(folder / "phantom.npy", phantom)
    np.save(folder / "stack.npy", np.stack([np.roll(phantom, shift, axis=1) * 0.7 for shift in (3, 6)]))
    matplotlib.image.imsave(
        folder / "noisy.png", np.clip(phantom + 0.05 * rng.standard_normal(phantom.shape), 0, 1), cmap="gray"
    )
    return folder


def run_cli(folder: Path, out_dir: Path, steps: int, *extra: str) -> None:
    arguments = ["train", "--data", str(folder), "--steps", str(steps), "--out-dir", str(out_dir)]
    assert main([*arguments, "--seed", "3", "--no-progress", "--checkpoint-every", "2", *TINY, *extra]) == 0


def test_cli_trains_checkpoints_and_resumes_deterministically(tiny_folder: Path, tmp_path: Path) -> None:
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    export = tmp_path / "exported" / "prior.safetensors"
    run_cli(tiny_folder, straight, 4, "--export", str(export))
    run_cli(tiny_folder, interrupted, 4, "--stop-after", "2")
    halfway = load_file(str(interrupted / "checkpoint.safetensors"))
    assert json.loads((interrupted / "checkpoint.json").read_text())["step"] == 2
    run_cli(tiny_folder, interrupted, 4, "--resume")

    first = load_file(str(straight / "checkpoint.safetensors"))
    second = load_file(str(interrupted / "checkpoint.safetensors"))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert not torch.equal(halfway["model.experts.half_weights"], first["model.experts.half_weights"])

    state = json.loads((straight / "checkpoint.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4 and all(np.isfinite(state["losses"]))
    record = json.loads(export.with_suffix(".json").read_text())
    assert record["steps"] == 4 and record["seed"] == 3 and np.isfinite(record["final_loss"])
    assert "--resume" not in record["command_line"] and record["data"]
    model = load_prior(export)
    assert torch.equal(model.experts.half_weights, first["model.experts.half_weights"])


def test_cli_learned_gains_and_lowpass_expert_resume_and_export(tiny_folder: Path, tmp_path: Path) -> None:
    options = ("--gain", "learned", "--lowpass-expert", "--lr-gains", "0.05")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    export = tmp_path / "exported.safetensors"
    run_cli(tiny_folder, straight, 3, *options, "--export", str(export))
    run_cli(tiny_folder, interrupted, 3, *options, "--stop-after", "1")
    run_cli(tiny_folder, interrupted, 3, *options, "--resume")
    first = load_file(str(straight / "checkpoint.safetensors"))
    second = load_file(str(interrupted / "checkpoint.safetensors"))
    for name in first:
        assert torch.equal(first[name], second[name]), name
    model = load_prior(export)
    assert model.config.gain == "learned" and model.config.lowpass_expert and model.num_filters == 21
    assert model.log_gains is not None
    assert not torch.allclose(model.gains(), model.bank.max_gain(), rtol=1e-4), "the gains were trained"
    record = json.loads(export.with_suffix(".json").read_text())
    assert record["num_parameters"] == model.num_parameters() == 1663
    assert record["train_config"]["lr_gains"] == 0.05
    assert record["train_config"]["model"]["gain"] == "learned"


def test_cli_tight_three_scale_bank_and_component_width(tiny_folder: Path, tmp_path: Path) -> None:
    options = ("--tight-frame", "--scales", "3", "--shear-levels", "1", "1", "1", "--component-width", "0.5")
    export = tmp_path / "tight.safetensors"
    run_cli(tiny_folder, tmp_path / "run", 2, *options, "--min-patch-peak", "0", "--export", str(export))
    model = load_prior(export)
    assert model.config.tight_frame and model.config.shear_levels == (1, 1, 1)
    assert model.config.component_width == 0.5 and model.num_filters == 30
    assert model.num_parameters() == 30 * 63 + 30 + 9 + 17 * 17 == 2218
    record = json.loads(export.with_suffix(".json").read_text())
    assert record["train_config"]["min_patch_peak"] == 0.0
    with torch.no_grad():
        score = model.score(torch.rand(1, 33, 29), 0.05)
    assert torch.isfinite(score).all()


def test_cli_patch_averaged_conv_bank(tiny_folder: Path, tmp_path: Path) -> None:
    options = ("--bank", "conv", "--conv-gain", "patch", "--conv-size", "5")
    export = tmp_path / "conv.safetensors"
    run_cli(tiny_folder, tmp_path / "run", 2, *options, "--export", str(export))
    model = load_prior(export)
    assert model.config.conv_gain == "patch" and model.config.conv_size == 5
    assert model.num_filters == 24 and model.bank.energy_weight == 1 / 25
    assert model.num_parameters() == 24 * 63 + 24 + 24 * 25
    with torch.no_grad():
        score = model.score(torch.rand(1, 33, 29), 0.05)
    assert torch.isfinite(score).all()


def test_noise_level_sampling() -> None:
    uniform = TrainConfig(levels_per_step=4000).noise_levels(torch.Generator().manual_seed(0))
    assert uniform.min() >= 0 and uniform.max() <= 0.4 and abs(uniform.mean().item() - 0.2) < 0.01
    config = TrainConfig(levels_per_step=4000, sigma_sampling="log-uniform", sigma_min=0.01)
    logs = config.noise_levels(torch.Generator().manual_seed(0)).log()
    assert logs.min() >= np.log(0.01) - 1e-6 and logs.max() <= np.log(0.4) + 1e-6
    assert abs(logs.mean().item() - 0.5 * (np.log(0.01) + np.log(0.4))) < 0.05
    with pytest.raises(ValueError):
        TrainConfig(sigma_sampling="log-uniform", sigma_min=0.0)


def test_resume_without_checkpoint_fails(tiny_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run_cli(tiny_folder, tmp_path / "empty", 2, "--resume")


def test_plot_subcommand_writes_png(tiny_folder: Path, tmp_path: Path) -> None:
    run_cli(tiny_folder, tmp_path / "run", 1)
    out = tmp_path / "filters.png"
    assert (
        main(
            [
                "plot",
                "--weights",
                str(tmp_path / "run" / "prior.safetensors"),
                "--out",
                str(out),
                "--sigmas",
                "0",
                "0.1",
            ]
        )
        == 0
    )
    assert out.stat().st_size > 10_000
    assert matplotlib.image.imread(out).ndim == 3


def test_folder_reader_handles_npy_png_and_fastmri_h5(tiny_folder: Path) -> None:
    rng = np.random.default_rng(1)
    image = shepp_logan(32).numpy()
    coils = image[None] * (1.0 + 0.3 * rng.standard_normal((4, 1, 1)))
    kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(coils, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    with h5py.File(tiny_folder / "scan.h5", "w") as handle:
        handle["kspace"] = kspace[None].astype(np.complex64)
    sources = {Path(source.name).name: source for source in folder_sources(tiny_folder)}
    assert set(sources) == {"phantom.npy", "stack.npy", "noisy.png", "scan.h5"}
    assert len(sources["stack.npy"].images) == 2
    rss = sources["scan.h5"].images[0]
    assert rss.max() == pytest.approx(1.0)
    assert np.corrcoef(rss.ravel(), image.ravel())[0, 1] > 0.99
    patches = PatchSampler(list(sources.values()), 48).sample(5, np.random.default_rng(2))
    assert patches.shape == (5, 48, 48) and patches.dtype == np.float32
    assert np.all(patches.max(axis=(1, 2)) > 0)
