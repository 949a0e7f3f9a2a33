"""The PoGMDM prior: analytic score vs autograd, analytic diffusion vs Monte Carlo, constraints,
filter banks and weights files (the shipped priors: ``test_shipped_priors.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from recon_core.prior import (
    PoGMDM,
    PoGMDMConfig,
    load_prior,
    save_prior,
)
from recon_core.prior.io import CONFIG_KEY
from recon_core.prior.mixture import (
    GaussianMixtureExperts,
    mixture_derivative,
    mixture_potential,
    project_onto_simplex,
)
from recon_core.prior.shearlet import ShearletFilterBank
from recon_core.sim.phantom import shepp_logan
from recon_core.training.trainer import dsm_loss


def perturbed_model(
    bank: str, seed: int = 0, dtype: torch.dtype = torch.float64, **options: object
) -> PoGMDM:
    """A prior with random (non-default) weights, scales and filters (and learned gains, if
    ``options`` asks for them), still feasible."""
    generator = torch.Generator().manual_seed(seed)
    model = PoGMDM(PoGMDMConfig(bank=bank, **options)).to(dtype)  # type: ignore[arg-type]
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * param.abs().mean() * torch.randn(param.shape, generator=generator, dtype=dtype))
        model.experts.scales.copy_(
            4.0 + 4.0 * torch.rand(model.num_filters, generator=generator, dtype=dtype)
        )
        model.project_()
    return model


def smooth_phantom(size: int = 96) -> torch.Tensor:
    """Shepp-Logan blurred by a Gaussian of 1.5 px (``(size, size)``, max about 1)."""
    image = shepp_logan(size)
    frequency = torch.fft.fftfreq(size)
    blur = torch.exp(-2.0 * (torch.pi * 1.5) ** 2 * (frequency[:, None] ** 2 + frequency[None, :] ** 2))
    return torch.fft.ifft2(torch.fft.fft2(image) * blur).real


@pytest.mark.parametrize(
    ("bank", "options"),
    [
        ("shearlet", {}),
        ("conv", {}),
        ("shearlet", {"gain": "learned", "lowpass_expert": True}),
        ("conv", {"gain": "learned"}),
        ("shearlet", {"tight_frame": True, "num_scales": 3, "shear_levels": (1, 1, 1)}),
        ("shearlet", {"component_width": 0.5}),
        ("conv", {"conv_gain": "max"}),
        ("conv", {"conv_gain": "patch"}),
    ],
    ids=[
        "shearlet",
        "conv",
        "shearlet-learned-gain-lowpass",
        "conv-learned-gain",
        "shearlet-tight-3-scales",
        "shearlet-narrow-components",
        "conv-max-gain",
        "conv-patch-average",
    ],
)
def test_score_is_minus_autograd_gradient_of_energy(
    bank: str, options: dict[str, object], device: torch.device
) -> None:
    model = perturbed_model(bank, **options).to(device)
    generator = torch.Generator().manual_seed(1)
    x = (
        (0.6 * torch.rand(2, 21, 26, generator=generator, dtype=torch.float64))
        .to(device)
        .requires_grad_(True)
    )
    sigma = torch.tensor([0.03, 0.25], dtype=torch.float64, device=device)
    (gradient,) = torch.autograd.grad(model.energy(x, sigma).sum(), x)
    with torch.no_grad():
        score = model.score(x, sigma)
    error = ((score + gradient).norm() / gradient.norm()).item()
    assert error < 1e-4, f"{bank}: relative error {error:.2e}"


def test_mixture_derivative_backward_matches_finite_differences() -> None:
    generator = torch.Generator().manual_seed(2)
    means = torch.linspace(-0.5, 0.5, 9, dtype=torch.float64)
    points = (0.4 * torch.randn(2, 5, generator=generator, dtype=torch.float64)).requires_grad_(True)
    log_weights = torch.log_softmax(
        torch.randn(2, 9, generator=generator, dtype=torch.float64), -1
    ).requires_grad_(True)
    std = torch.tensor([[0.1], [0.3]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda y, w, s: mixture_derivative(y, w, s, means, 16), (points, log_weights, std)
    )


def test_mixture_derivative_is_derivative_of_potential() -> None:
    generator = torch.Generator().manual_seed(3)
    means = torch.linspace(-0.5, 0.5, 125, dtype=torch.float64)
    points = (0.7 * torch.randn(3, 50, generator=generator, dtype=torch.float64)).requires_grad_(True)
    log_weights = torch.log_softmax(3.0 * torch.randn(3, 125, generator=generator, dtype=torch.float64), -1)
    std = torch.tensor([[0.008], [0.05], [0.4]], dtype=torch.float64)
    (autograd,) = torch.autograd.grad(mixture_potential(points, log_weights, std, means).sum(), points)
    analytic = mixture_derivative(points.detach(), log_weights, std, means, chunk_elements=1000)
    assert torch.allclose(analytic, autograd, rtol=1e-9, atol=1e-9)


def test_diffused_expert_density_matches_monte_carlo() -> None:
    """p_j(y; s(sigma)) must equal the clean expert density convolved with N(0, (lambda eta sigma)^2)."""
    generator = torch.Generator().manual_seed(4)
    experts = GaussianMixtureExperts(1, 125, 0.5).double()
    with torch.no_grad():
        experts.half_weights.copy_(torch.rand(1, 63, generator=generator, dtype=torch.float64) ** 4)
        experts.scales.fill_(1.7)
        experts.project_()
    gain, sigma, samples = torch.tensor([0.8], dtype=torch.float64), 0.1, 400_000
    components = torch.multinomial(experts.weights()[0], samples, replacement=True, generator=generator)
    clean = experts.means[components] + experts.base_std * torch.randn(
        samples, generator=generator, dtype=torch.float64
    )
    noisy = clean + 1.7 * 0.8 * sigma * torch.randn(samples, generator=generator, dtype=torch.float64)
    edges = torch.linspace(-0.8, 0.8, 81, dtype=torch.float64)
    observed = torch.histogram(noisy, bins=edges).hist / samples
    centres = 0.5 * (edges[1:] + edges[:-1])

    def predicted(std: torch.Tensor) -> torch.Tensor:
        potential = mixture_potential(centres[None], experts.log_weights(), std.reshape(1, 1), experts.means)
        return torch.exp(-potential[0]) * (edges[1] - edges[0])

    diffused = predicted(experts.component_std(gain, torch.tensor([sigma], dtype=torch.float64)))
    tolerance = 5.0 * torch.sqrt(diffused / samples) + 2e-4
    assert torch.all((observed - diffused).abs() < tolerance)
    undiffused = predicted(torch.tensor(experts.base_std, dtype=torch.float64))
    assert not torch.all((observed - undiffused).abs() < tolerance), "the check cannot tell the widths apart"


def test_conv_gain_is_the_response_noise_std() -> None:
    """Orthogonal filters: white noise of std sigma on x puts noise of std eta_j sigma on K_j x."""
    model = perturbed_model("conv", dtype=torch.float32)
    noise = torch.randn(8, 128, 128, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        responses = model.responses(noise) / model.experts.scales[:, None, None]
        gains = model.gains()
    empirical = responses.transpose(0, 1).flatten(1).std(dim=1)
    assert torch.allclose(empirical, gains, rtol=0.03)


def test_conv_gain_choices_and_the_coverage_they_give() -> None:
    """Linear-regime noise removal ``w * sum_j |K_j|^2 / eta_j^2`` (``w`` the energy weight):
    l2 gains over-count a complete orthonormal bank about n^2 fold (46-49 away from DC), max
    gains keep it of order one, and the patch average makes it exactly 1 away from DC."""
    coverage = {}
    for kind in ("l2", "max", "patch"):
        model = PoGMDM(PoGMDMConfig(bank="conv", conv_gain=kind)).double()
        with torch.no_grad():
            transfer, gains = model.bank.half_transfer(64, 64), model.gains()
        coverage[kind] = model.bank.energy_weight * (
            transfer.abs().square() / gains[:, None, None].square()
        ).sum(dim=0)
        if kind == "max":
            assert torch.allclose(gains, model.bank.max_gain())
    away_from_dc = torch.ones_like(coverage["l2"], dtype=torch.bool)
    away_from_dc[:8, :8] = away_from_dc[-8:, :8] = False
    assert coverage["l2"][away_from_dc].min() > 45.0 and coverage["l2"].max() < 49.0 + 1e-6
    assert 1.0 <= coverage["max"].max() <= 4.0
    assert torch.allclose(coverage["patch"], coverage["l2"] / 49.0)
    assert coverage["patch"][away_from_dc].min() > 0.92 and coverage["patch"].max() < 1.0 + 1e-9
    with pytest.raises(ValueError, match="conv gain"):
        PoGMDM(PoGMDMConfig(bank="conv", conv_gain="mean"))  # type: ignore[arg-type]


def test_patch_averaged_conv_prior_is_the_mean_of_exact_patch_tweedie_estimates() -> None:
    """``conv_gain="patch"``: the image Tweedie step equals the average, over the n^2 patches that
    cover a pixel, of the exact Tweedie step of the product of experts on one patch (the
    orthonormal filters make each patch's diffused density exact; circular boundary)."""
    model = perturbed_model("conv", conv_gain="patch")
    size, height, width = 7, 12, 13
    generator = torch.Generator().manual_seed(4)
    noisy = 0.5 * torch.rand(1, height, width, generator=generator, dtype=torch.float64)
    sigma = 0.07
    with torch.no_grad():
        image_step = model.denoise(noisy, sigma)[0]
        kernels = model.bank.kernels.double()
        flipped = kernels.flip(-1, -2)  # the bank filters by convolution: response = <flipped, patch>
        scales = model.experts.scales.double()
        std = model.component_std(torch.tensor([sigma], dtype=torch.float64))[0]
        means = model.experts.means.double()
        log_weights = model.experts.log_weights().double()
        total = torch.zeros(height, width, dtype=torch.float64)
        half = size // 2
        for row in range(height):
            for col in range(width):
                rows = (torch.arange(row - half, row + half + 1)) % height
                cols = (torch.arange(col - half, col + half + 1)) % width
                patch = noisy[0][rows][:, cols]
                responses = scales * (flipped * patch).sum(dim=(-1, -2))
                derivative = mixture_derivative(responses[:, None], log_weights, std[:, None], means)[:, 0]
                patch_score = -(scales * derivative)[:, None, None] * flipped
                estimate = patch + sigma**2 * patch_score.sum(dim=0)
                total[rows[:, None], cols[None, :]] += estimate
    assert torch.allclose(image_step, total / size**2, atol=1e-10)


def test_simplex_projection_is_the_euclidean_projection() -> None:
    generator = torch.Generator().manual_seed(5)
    values = torch.randn(4, 11, generator=generator, dtype=torch.float64) * 0.3
    projected = project_onto_simplex(values, floor=0.0)
    assert torch.allclose(projected.sum(-1), torch.ones(4, dtype=torch.float64))
    for row in range(4):  # KKT: w = max(v - tau, 0) with one tau per row
        active = projected[row] > 0
        taus = (values[row] - projected[row])[active]
        assert torch.allclose(taus, taus[0].expand_as(taus))
        assert torch.all(values[row][~active] <= taus[0] + 1e-12)


def test_training_step_keeps_all_constraints() -> None:
    torch.manual_seed(6)
    model = PoGMDM()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    clean = smooth_phantom(48)[None].repeat(2, 1, 1)
    levels, group = torch.tensor([0.05, 0.3]), torch.tensor([0, 1])
    loss = dsm_loss(model, clean, levels, group, torch.randn(2, 48, 48), table_points=257, margin=4)
    loss.backward()
    optimizer.step()
    assert not torch.allclose(model.experts.weights().sum(-1), torch.ones(model.num_filters), atol=1e-4)
    model.project_()
    weights = model.experts.weights()
    assert torch.allclose(weights.sum(-1), torch.ones(model.num_filters), atol=1e-6)
    assert torch.all(weights >= 1e-14)
    assert torch.equal(weights, weights.flip(-1))
    assert torch.all(model.experts.scales >= 0)
    bank = model.bank
    assert isinstance(bank, ShearletFilterBank)
    assert abs(bank.lowpass.sum().item() - 1.0) < 1e-6
    assert abs(bank.fan.abs().sum().item() - 1.0) < 1e-5


def test_conv_bank_projection_is_zero_mean_orthonormal() -> None:
    model = PoGMDM(PoGMDMConfig(bank="conv"))
    with torch.no_grad():
        model.bank.kernels.add_(
            0.2 * torch.randn(model.bank.kernels.shape, generator=torch.Generator().manual_seed(7))
        )
    model.project_()
    flat = model.bank.kernels.flatten(1)
    assert torch.allclose(flat @ flat.T, torch.eye(48), atol=1e-5)
    assert flat.sum(1).abs().max() < 1e-5
    assert model.num_parameters() == 48 * 63 + 48 + 48 * 49


def test_parameter_count_of_the_shearlet_prior() -> None:
    assert PoGMDM().num_parameters() == 20 * 63 + 20 + 9 + 17 * 17 == 1578


def test_parameter_count_with_learned_gains_and_lowpass_expert() -> None:
    model = PoGMDM(PoGMDMConfig(gain="learned", lowpass_expert=True))
    assert model.num_filters == 21
    assert model.num_parameters() == 21 * 63 + 21 + 21 + 9 + 17 * 17 == 1663


def test_lowpass_expert_filter_is_the_coarse_scaling_function() -> None:
    """The extra filter is real, passes DC with gain 1 and covers what the shearlets leave out."""
    bank = ShearletFilterBank(lowpass_expert=True).double()
    omega = 2 * torch.pi * torch.fft.fftfreq(64, dtype=torch.float64)
    with torch.no_grad():
        transfer = bank.transfer(omega, omega)
    assert transfer.shape[0] == 21 and bank.labels()[-1] == "low-pass"
    lowpass = transfer[-1]
    assert torch.fft.ifft2(lowpass).imag.abs().max() < 1e-12
    assert abs(lowpass[0, 0].real.item() - 1.0) < 1e-12
    assert transfer[:-1, 0, 0].abs().max() < 1e-12, "the shearlets do not pass DC"
    high = (omega.abs()[:, None] > 0.75 * torch.pi) | (omega.abs()[None, :] > 0.75 * torch.pi)
    assert lowpass.abs()[high].max() < 0.05
    assert torch.allclose(transfer[:-1], ShearletFilterBank().double().transfer(omega, omega).detach())


@pytest.mark.parametrize("scales", [(1, 1), (1, 1, 1), (1, 1, 2)])
def test_tight_frame_is_parseval_at_any_filters(scales: tuple[int, ...]) -> None:
    """With ``tight``, ``sum_j |Psi_j|^2 + |Phi|^2 = 1`` everywhere, for perturbed ``h, P`` too;
    the filters stay real and keep their orientation (each is a positive multiple of the
    untight one at every frequency)."""
    for seed in (0, 1):
        model = perturbed_model("shearlet", seed=seed, num_scales=len(scales), shear_levels=scales)
        tight = ShearletFilterBank(len(scales), scales, tight=True, lowpass_expert=True).double()
        tight.load_state_dict(model.bank.state_dict())
        omega_y = 2 * torch.pi * torch.fft.fftfreq(48, dtype=torch.float64)
        omega_x = 2 * torch.pi * torch.fft.fftfreq(40, dtype=torch.float64)
        with torch.no_grad():
            transfer = tight.transfer(omega_y, omega_x)
            plain = model.bank.transfer(omega_y, omega_x)
        assert transfer.shape[0] == model.num_filters + 1
        total = transfer.abs().square().sum(dim=0)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-10)
        ratio = transfer[:-1] / plain.where(plain.abs() > 1e-9, torch.ones_like(plain))
        significant = plain.abs() > 1e-6
        assert ratio[significant].imag.abs().max() < 1e-8 and ratio[significant].real.min() > 0
        assert torch.fft.ifft2(transfer).imag.abs().max() < 1e-12


def test_component_width_sets_sigma_zero() -> None:
    narrow = PoGMDM(PoGMDMConfig(component_width=0.25))
    spacing = 2 * narrow.experts.radius / (narrow.config.num_components - 1)
    assert narrow.experts.spacing == pytest.approx(spacing)
    assert narrow.experts.base_std == pytest.approx(0.25 * spacing)
    assert PoGMDM().experts.base_std == pytest.approx(spacing), "the spec's sigma_0 by default"
    with pytest.raises(ValueError, match="width"):
        PoGMDM(PoGMDMConfig(component_width=0.0))


def test_learned_gains_set_the_widths_stay_positive_and_train() -> None:
    torch.manual_seed(12)
    model = PoGMDM(PoGMDMConfig(gain="learned"))
    assert model.log_gains is not None
    assert torch.allclose(model.gains(), model.bank.max_gain(), rtol=1e-6), "starts at the max gain"
    with torch.no_grad():
        model.log_gains.copy_(torch.linspace(-3.0, 1.0, model.num_filters))
    sigma = torch.tensor([0.1])
    expected = torch.sqrt(model.experts.base_std**2 + (model.experts.scales * model.gains() * 0.1) ** 2)
    assert torch.allclose(model.component_std(sigma)[0], expected)
    optimizer = torch.optim.Adam(model.parameters(), lr=5.0)  # absurd steps: the gains stay > 0
    clean = smooth_phantom(48)[None].repeat(2, 1, 1)
    for _ in range(3):
        optimizer.zero_grad()
        loss = dsm_loss(
            model, clean, torch.tensor([0.05, 0.3]), torch.tensor([0, 1]), torch.randn(2, 48, 48), 257, 4
        )
        loss.backward()
        assert model.log_gains.grad is not None and model.log_gains.grad.abs().max() > 0
        optimizer.step()
        model.project_()
        assert torch.all(model.gains() > 0) and torch.isfinite(model.gains()).all()


def test_weights_saved_before_the_gain_options_still_load(tmp_path: Path) -> None:
    """A weights file whose config lacks ``gain`` / ``lowpass_expert`` is the original model."""
    model = perturbed_model("shearlet", dtype=torch.float32)
    legacy = {
        key: value
        for key, value in model.config.to_dict().items()
        if key not in ("gain", "lowpass_expert", "tight_frame", "component_width")
    }
    path = tmp_path / "legacy.safetensors"
    tensors = {name: value.contiguous() for name, value in model.state_dict().items()}
    save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(legacy)})
    loaded = load_prior(path)
    assert loaded.config.gain == "max" and not loaded.config.lowpass_expert
    assert not loaded.config.tight_frame and loaded.config.component_width == 1.0
    assert loaded.num_parameters() == 1578 and loaded.log_gains is None
    x = smooth_phantom(40)[None]
    with torch.no_grad():
        assert torch.allclose(loaded.score(x, 0.1), model.score(x, 0.1), rtol=1e-5, atol=1e-5)
    roundtrip = tmp_path / "new.safetensors"
    learned = perturbed_model("shearlet", dtype=torch.float32, gain="learned", lowpass_expert=True)
    save_prior(learned, roundtrip)
    again = load_prior(roundtrip)
    assert again.config == learned.config
    assert torch.equal(again.gains(), learned.gains().detach())


def test_shearlets_are_real_and_point_along_their_shear() -> None:
    bank = ShearletFilterBank()
    omega = 2 * torch.pi * torch.fft.fftfreq(64, dtype=torch.float64)
    with torch.no_grad():
        transfer = bank.double().transfer(omega, omega)
    kernels = torch.fft.ifft2(transfer)
    assert kernels.imag.abs().max() < 1e-12 * kernels.real.abs().max()
    energy = transfer.abs().square()
    omega_y, omega_x = omega[:, None].expand(64, 64), omega[None, :].expand(64, 64)
    for index, label in enumerate(bank.labels()):
        shear = int(label.split("k")[1].split("/")[0]) / 2
        main, other = (omega_x, omega_y) if label.startswith("h") else (omega_y, omega_x)
        mask = main.abs() < 0.75 * torch.pi  # away from the aliased corners
        slope = (energy[index] * mask * other * main).sum() / (energy[index] * mask * main.square()).sum()
        assert abs(slope.item() - shear) < 0.12, f"{label}: slope {slope.item():.3f}"


def test_any_size_and_per_image_sigma() -> None:
    model = perturbed_model("shearlet", dtype=torch.float32)
    x = torch.rand(3, 37, 50, generator=torch.Generator().manual_seed(8))
    sigma = torch.tensor([0.01, 0.1, 0.3])
    with torch.no_grad():
        batch = model.score(x, sigma)
        single = torch.cat([model.score(x[i : i + 1], float(sigma[i])) for i in range(3)])
    assert batch.shape == x.shape
    assert torch.allclose(batch, single, rtol=1e-4, atol=1e-3)


def test_transfer_cache_follows_parameter_updates() -> None:
    model = PoGMDM()
    with torch.no_grad():
        before = model.transfer(32, 32, torch.float32).clone()
        model.bank.fan.mul_(-1.0)
        after = model.transfer(32, 32, torch.float32)
    assert torch.allclose(after, -before, atol=1e-6)
