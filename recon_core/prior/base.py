"""The contract every image prior fulfils, so that samplers and solvers need no model class,
and Tweedie's formula, written once for all of them (docs/ALGORITHM.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class DiffusionImagePrior(Protocol):
    """A prior over real images at diffusion noise level ``sigma``.

    Shapes: ``x`` is ``(B, H, W)`` float32 on the normalised scale (max about 1); ``sigma`` is
    a float or a ``(B,)`` tensor (one noise level per image). Works for any ``H, W``.
    """

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``-log p(x, sigma)`` up to a constant, per image: ``(B,)``."""
        ...

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``grad_x log p(x, sigma) = -grad_x energy``: ``(B, H, W)``."""
        ...


def tweedie_denoise(
    score: Callable[[Tensor, Tensor | float], Tensor], x: Tensor, sigma: Tensor | float
) -> Tensor:
    """Tweedie's formula: the MMSE estimate ``x + sigma^2 score(x, sigma)`` of the clean images.

    Args:
        score: ``score(x, sigma)``, e.g. a :class:`DiffusionImagePrior`'s ``score``.
        x: ``(B, ...)`` images diffused to ``sigma`` (real, or complex for a complex prior).
        sigma: a float, or a ``(B,)`` real tensor (one level per image, broadcast over the
            image axes).

    Returns:
        The denoised images, shaped and typed like ``x``.
    """
    per_image = isinstance(sigma, Tensor)
    variance = sigma.reshape(-1, *(1,) * (x.ndim - 1)).square() if per_image else sigma**2
    return x + variance * score(x, sigma)
