"""The shipped priors: loaded by name, finite scores at scanner size, the tabulated fast path
against the exact score, and the Tweedie denoiser."""

from __future__ import annotations

import json

import pytest
import torch
from test_prior import smooth_phantom

from recon_core.prior import (
    SHIPPED_PRIORS,
    DiffusionImagePrior,
    PoGMDM,
    PoGMDMConfig,
    default_weights_path,
    load_default_prior,
    load_prior,
    shipped_weights_path,
)


@pytest.fixture(scope="module", params=sorted(SHIPPED_PRIORS))
def shipped(request: pytest.FixtureRequest) -> PoGMDM:
    """Every shipped prior in turn."""
    return load_prior(request.param, "cpu")


def test_shipped_priors_by_name() -> None:
    default = load_default_prior("cpu")
    assert default_weights_path() == shipped_weights_path("shearlet")
    assert default.config.bank == "shearlet" and default.num_parameters() == 1578
    conv = load_prior("conv")
    assert conv.config.bank == "conv" and conv.config.conv_gain == "patch" and conv.num_parameters() == 5424
    with pytest.raises(ValueError, match="unknown shipped prior"):
        shipped_weights_path("unet")
    with pytest.raises(FileNotFoundError, match="no PoGMDM weights"):
        load_prior("/nonexistent/prior.safetensors")


def test_shipped_prior_gives_finite_score_on_320(shipped: PoGMDM) -> None:
    assert isinstance(shipped, DiffusionImagePrior)
    name = "conv" if shipped.config.bank == "conv" else "shearlet"
    record = json.loads(shipped_weights_path(name).with_suffix(".json").read_text())
    assert shipped.num_parameters() == record["num_parameters"]
    assert PoGMDMConfig.from_dict(record["train_config"]["model"]) == shipped.config
    x = torch.nn.functional.pad(smooth_phantom(300), (10, 10, 10, 10))[None]
    with torch.no_grad():
        score = shipped.score(x + 0.05 * torch.randn_like(x), 0.05)
    assert score.shape == (1, 320, 320)
    assert torch.isfinite(score).all()
    assert score.abs().max() > 0


def test_tabulated_score_matches_exact(shipped: PoGMDM, device: torch.device) -> None:
    model = shipped.to(device)
    fast = model.tabulated(4097)
    clean = smooth_phantom(64).to(device)[None]
    generator = torch.Generator().manual_seed(9)
    for sigma in (0.005, 0.05, 0.4):
        noisy = clean + sigma * torch.randn(clean.shape, generator=generator).to(device)
        with torch.no_grad():
            exact, approximate = model.score(noisy, sigma), fast.score(noisy, sigma)
        error = ((exact - approximate).norm() / exact.norm()).item()
        assert error < 2e-3, f"sigma {sigma}: tabulated relative error {error:.2e}"


def test_tabulated_score_with_one_level_per_image_matches_each_level(shipped: PoGMDM) -> None:
    """Images at different noise levels in one batch (tables of one node count, stacked) get the
    score each gets alone (tables sized by ``nodes_per_std``), to the tables' accuracy."""
    fast = shipped.tabulated()
    clean = smooth_phantom(48)[None].expand(2, -1, -1)
    noisy = clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))
    levels = torch.tensor([0.01, 0.001])
    with torch.no_grad():
        together = fast.score(noisy, levels)
        alone = torch.cat([fast.score(noisy[index : index + 1], float(levels[index])) for index in range(2)])
        exact = shipped.score(noisy, levels)
    for part in (together, alone):
        assert ((part - exact).norm() / exact.norm()).item() < 2e-3


@pytest.mark.parametrize("sigma", [0.05, 0.1, 0.2])
def test_tweedie_denoiser_reduces_error(shipped: PoGMDM, sigma: float) -> None:
    clean = smooth_phantom(96)[None]
    noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        denoised = shipped.tabulated().denoise(noisy, sigma)
    noisy_error = (noisy - clean).square().mean()
    denoised_error = (denoised - clean).square().mean()
    assert denoised_error < 0.5 * noisy_error, f"MSE {denoised_error:.2e} vs noisy {noisy_error:.2e}"
