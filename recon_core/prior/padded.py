"""A prior evaluated on the image zero-padded to an FFT-friendly size.

The PoGMDM filter bank filters in the Fourier domain (``rfft2`` / ``irfft2`` of the whole image,
once per filter), so its cost follows the FFT's: an image side with a large prime factor is
slow (230 = 2 x 5 x 23 took about twice as long per transform as 240 = 2^4 x 3 x 5 on one CPU
thread). :class:`PaddedPrior` pads every image with zeros at its bottom and right edges up to
the next size whose only prime factors are 2, 3 and 5, evaluates the wrapped prior there and
crops the score back::

    E_pad(x, sigma) = E(P x, sigma),    score_pad(x, sigma) = P^T score(P x, sigma)

with ``P`` the zero padding, so ``score_pad`` is exactly the gradient of ``E_pad`` and the pair
is again a :class:`~recon_core.prior.base.DiffusionImagePrior`. The one change in the model: the
filters no longer wrap around the image edges (zero instead of periodic boundaries), which
for MR images (background at the borders) is the more natural boundary.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from recon_core.prior.base import DiffusionImagePrior


@functools.lru_cache(maxsize=64)
def fft_friendly_size(size: int) -> int:
    """The smallest ``n >= size`` whose prime factors are all 2, 3 or 5 (cached: it is asked on
    every prior evaluation)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    candidate = size
    while True:
        rest = candidate
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return candidate
        candidate += 1


class PaddedPrior:
    """Wraps a :class:`DiffusionImagePrior` on real ``(B, H, W)`` images (see the module docstring).

    Images whose sides are already FFT-friendly go to the wrapped prior unchanged.
    """

    def __init__(self, prior: DiffusionImagePrior) -> None:
        if not isinstance(prior, DiffusionImagePrior):
            raise TypeError(f"prior must implement energy and score, got {type(prior).__name__}")
        self.prior = prior

    @staticmethod
    def _padding(x: Tensor) -> tuple[int, int]:
        height, width = x.shape[-2], x.shape[-1]
        return fft_friendly_size(height) - height, fft_friendly_size(width) - width

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``E(P x, sigma)`` per image: ``(B,)``."""
        rows, cols = self._padding(x)
        if rows == 0 and cols == 0:
            return self.prior.energy(x, sigma)
        return self.prior.energy(torch.nn.functional.pad(x, (0, cols, 0, rows)), sigma)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``P^T score(P x, sigma)``: ``(B, H, W)``."""
        rows, cols = self._padding(x)
        if rows == 0 and cols == 0:
            return self.prior.score(x, sigma)
        padded = self.prior.score(torch.nn.functional.pad(x, (0, cols, 0, rows)), sigma)
        return padded[..., : x.shape[-2], : x.shape[-1]]
