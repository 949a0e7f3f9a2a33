"""A real-image prior applied to a complex image, part by part.

The PoGMDM prior is learned on real (magnitude) images. A complex MR image ``u = a + i b``
whose phase is not smooth (the object phase of a brain changes sharply at the scalp and in
vessels) cannot be written as a non-negative real image times smooth coil maps, so the joint
model can keep the phase in the image instead and put the prior on both parts::

    E_c(u, sigma) = E(Re u, sigma) + E(Im u, sigma)
    score_c(u, sigma) = score(Re u, sigma) + i score(Im u, sigma)

(``dE/dRe u + i dE/dIm u`` is the complex-gradient convention of
:mod:`recon_core.physics.data_term`). Diffusing ``u`` with complex noise whose real and imaginary
parts both have std ``sigma`` diffuses each part exactly as the prior was trained, so the
annealing schedule and Tweedie's formula carry over unchanged. The experts are symmetric, so
a negative part is as likely as a positive one: only edges and smoothness matter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon_core.prior.base import DiffusionImagePrior, tweedie_denoise
from recon_core.prior.model import sigma_vector


def _split(x: Tensor) -> Tensor:
    """``(B, H, W)`` complex -> ``(2B, H, W)`` real: the real parts, then the imaginary parts."""
    return torch.cat((x.real, x.imag), dim=0).contiguous()


def _sigma_twice(sigma: Tensor | float) -> Tensor | float:
    if isinstance(sigma, Tensor) and sigma.ndim == 1:
        return torch.cat((sigma, sigma))
    return sigma


class ComplexPartsPrior:
    """Wraps a :class:`DiffusionImagePrior` on real images into one on complex images.

    Real inputs are passed through unchanged, so the wrapper can stand in for the prior
    everywhere. Satisfies ``DiffusionImagePrior`` with ``x`` ``(B, H, W)`` complex64.
    """

    def __init__(self, prior: DiffusionImagePrior) -> None:
        if not isinstance(prior, DiffusionImagePrior):
            raise TypeError(f"prior must implement energy and score, got {type(prior).__name__}")
        self.prior = prior

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``E(Re x) + E(Im x)`` per image: ``(B,)``."""
        if not x.is_complex():
            return self.prior.energy(x, sigma)
        parts = self.prior.energy(_split(x), _sigma_twice(sigma))
        return parts[: x.shape[0]] + parts[x.shape[0] :]

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``score(Re x) + i score(Im x)``: ``(B, H, W)`` complex (real in, real out)."""
        if not x.is_complex():
            return self.prior.score(x, sigma)
        parts = self.prior.score(_split(x), _sigma_twice(sigma))
        return torch.complex(parts[: x.shape[0]], parts[x.shape[0] :])

    def denoise(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Tweedie's estimate ``x + sigma^2 score(x, sigma)`` (per part)."""
        return tweedie_denoise(self.score, x, sigma_vector(sigma, x.shape[0], x.real))
