"""The prior evaluated on the zero-padded image (recon_core/prior/padded.py)."""

from __future__ import annotations

import pytest
import torch

from recon_core.prior import load_prior
from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.model import PoGMDM
from recon_core.prior.padded import PaddedPrior, fft_friendly_size


@pytest.mark.parametrize(("size", "expected"), [(1, 1), (7, 8), (11, 12), (180, 180), (230, 240), (97, 100)])
def test_fft_friendly_size(size: int, expected: int) -> None:
    assert fft_friendly_size(size) == expected
    with pytest.raises(ValueError, match="size"):
        fft_friendly_size(0)


def _model() -> PoGMDM:
    """The shipped (trained) shearlet prior, exact and in float64."""
    return load_prior("shearlet").to(torch.float64)


def test_score_is_minus_the_gradient_of_the_padded_energy() -> None:
    prior = PaddedPrior(_model())
    generator = torch.Generator().manual_seed(1)
    x = (0.6 * torch.rand(2, 23, 29, generator=generator, dtype=torch.float64)).requires_grad_(True)
    sigma = torch.tensor([0.03, 0.2], dtype=torch.float64)
    (gradient,) = torch.autograd.grad(prior.energy(x, sigma).sum(), x)
    score = prior.score(x.detach(), sigma)
    assert score.shape == x.shape
    assert float((score + gradient).norm() / gradient.norm()) < 1e-6
    assert isinstance(prior, DiffusionImagePrior)


def test_padding_changes_only_the_boundary_and_friendly_sizes_pass_through() -> None:
    model = _model()
    prior = PaddedPrior(model)
    generator = torch.Generator().manual_seed(2)
    friendly = torch.rand(1, 24, 30, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(prior.score(friendly, 0.05), model.score(friendly, 0.05), rtol=0, atol=0)
    # An object surrounded by background: periodic and zero boundaries see nearly the same image
    # (not exactly: the shearlets' spatial tails are long, and this grid is tiny).
    image = torch.zeros(1, 23, 29, dtype=torch.float64)
    image[:, 8:15, 9:20] = torch.rand(1, 7, 11, generator=generator, dtype=torch.float64)
    inner = (slice(None), slice(6, 17), slice(7, 22))
    padded, periodic = prior.score(image, 0.05), model.score(image, 0.05)
    assert float((padded - periodic)[inner].abs().max()) < 0.05 * float(periodic[inner].abs().max())
    assert not torch.equal(padded, periodic)  # the edges do differ
