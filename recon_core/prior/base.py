"""The contract every image prior fulfils, so that samplers and solvers need no model class."""

from __future__ import annotations

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
