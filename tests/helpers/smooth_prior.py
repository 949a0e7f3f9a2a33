"""A small analytic diffusion prior for tests: a Charbonnier (smoothed total variation) expert
on the two forward differences of the image, diffused like a PoGMDM expert.

    E(x, sigma) = weight * sum_p sum_d ( sqrt((D_d x)_p^2 + s^2) - s ) / s,
    s(sigma)^2 = s0^2 + eta^2 sigma^2,  eta = 2 (largest gain of a forward difference).

Near zero each expert is a Gaussian of std ``s / sqrt(weight)``; its tails are linear, so edges
survive. It fulfils the :class:`recon_core.prior.base.DiffusionImagePrior` protocol and keeps
the reconstruction tests independent of the trained prior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from recon_core.prior.coil_prior import finite_differences


class SmoothTVPrior:
    """Diffused Charbonnier prior over ``(B, H, W)`` images (see the module docstring)."""

    def __init__(self, base_width: float = 0.02, weight: float = 1.0, eta: float = 2.0) -> None:
        self.base_width = base_width
        self.weight = weight
        self.eta = eta

    def _width(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma_t.ndim == 1:
            sigma_t = sigma_t.reshape(-1, 1, 1)
        return torch.sqrt(self.base_width**2 + self.eta**2 * sigma_t**2)

    @staticmethod
    def _differences_adjoint(along_h: Tensor, along_w: Tensor) -> Tensor:
        out = torch.zeros_like(along_h)
        out[..., 1:, :] += along_h[..., :-1, :]
        out[..., :-1, :] -= along_h[..., :-1, :]
        out[..., :, 1:] += along_w[..., :, :-1]
        out[..., :, :-1] -= along_w[..., :, :-1]
        return out

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        width = self._width(x, sigma)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for response in finite_differences(x):
            total = total + ((torch.sqrt(response**2 + width**2) - width) / width).flatten(1).sum(1)
        return self.weight * total

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        width = self._width(x, sigma)
        along_h, along_w = finite_differences(x)
        derivative_h = along_h / (width * torch.sqrt(along_h**2 + width**2))
        derivative_w = along_w / (width * torch.sqrt(along_w**2 + width**2))
        return -self.weight * self._differences_adjoint(derivative_h, derivative_w)
