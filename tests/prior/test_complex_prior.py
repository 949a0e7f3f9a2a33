"""The complex-image wrapper of a real prior: per-part score, energy and Tweedie step."""

from __future__ import annotations

import pytest
import torch
from operator_checks import random_complex
from smooth_prior import SmoothTVPrior

from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.complex_prior import ComplexPartsPrior


def test_score_is_minus_the_complex_gradient_of_the_energy(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(0)
    x = random_complex((3, 9, 11), generator, "cpu").to(device=device, dtype=torch.complex128)
    prior = ComplexPartsPrior(SmoothTVPrior())
    sigma = torch.tensor([0.02, 0.1, 0.3], device=device, dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    prior.energy(leaf, sigma).sum().backward()
    assert leaf.grad is not None
    # torch's gradient of a real loss w.r.t. a complex leaf is dE/dRe + i dE/dIm.
    torch.testing.assert_close(prior.score(x, sigma), -leaf.grad, rtol=1e-6, atol=1e-9)


def test_parts_are_scored_independently_and_real_inputs_pass_through(device: torch.device) -> None:
    generator = torch.Generator().manual_seed(1)
    real = torch.rand((2, 8, 8), generator=generator, dtype=torch.float64).to(device)
    imag = torch.rand((2, 8, 8), generator=generator, dtype=torch.float64).to(device)
    base = SmoothTVPrior()
    prior = ComplexPartsPrior(base)
    score = prior.score(torch.complex(real, imag), 0.05)
    torch.testing.assert_close(score.real, base.score(real, 0.05))
    torch.testing.assert_close(score.imag, base.score(imag, 0.05))
    torch.testing.assert_close(prior.score(real, 0.05), base.score(real, 0.05))
    energy = prior.energy(torch.complex(real, imag), 0.05)
    torch.testing.assert_close(energy, base.energy(real, 0.05) + base.energy(imag, 0.05))
    denoised = prior.denoise(torch.complex(real, imag), 0.05)
    torch.testing.assert_close(denoised.real, real + 0.05**2 * base.score(real, 0.05))
    assert isinstance(prior, DiffusionImagePrior)


def test_rejects_a_non_prior() -> None:
    with pytest.raises(TypeError, match="energy and score"):
        ComplexPartsPrior(object())  # type: ignore[arg-type]
