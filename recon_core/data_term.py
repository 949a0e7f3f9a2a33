"""The joint data term ``D(u, c)`` of image ``u`` and un-normalised coil maps ``c``.

    D(u, c) = (lambda / 2) * sum_c || M F(u s_c) - y_c ||^2,   s_c = c_c / R,
    R = sqrt(sum_l |c_l|^2 + eps^2)

with ``r`` the k-space residual and ``g_c = F^H M^H r_c`` (ALGORITHM.md section 1):

    grad_u D = lambda * Re( sum_c conj(s_c) g_c )
    grad_c D = lambda * u * ( g_c / R - c_c * Re( sum_l conj(c_l) g_l ) / R^3 )

Complex gradients follow the convention ``dD/dRe(c) + i dD/dIm(c)`` (what torch autograd
returns for a real loss), so ``c - tau * grad_c D`` is a descent step.

Shapes: ``u`` is ``(B, H, W)`` real; ``c`` is ``(B, C, H, W)`` complex; the data ``y`` is
``(C, H, W)`` complex on the normalised scale, zero where not acquired; ``lambda`` is a float
or a ``(B,)`` tensor. ``D`` is invariant to a global rescaling of ``c`` (only ``s`` enters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recon_core.operators import FFT2Operator

# Added under the square root of the coil RSS so that s = c / R stays finite where all
# coils vanish; tiny against the normalised coils (RMS of R is 1, see normalise_coil_scale).
COIL_RSS_EPS = 1e-6


def coil_rss(coils: Tensor, eps: float = COIL_RSS_EPS) -> Tensor:
    """``R = sqrt(sum_c |c_c|^2 + eps^2)`` over the coil axis: ``(*batch, C, H, W) -> (*batch, H, W)``."""
    return torch.sqrt((coils.real**2 + coils.imag**2).sum(dim=-3) + eps**2)


def normalised_coils(coils: Tensor, eps: float = COIL_RSS_EPS) -> Tensor:
    """``s = c / R``: RSS-normalised maps, ``sum_c |s_c|^2 = 1`` wherever the coils are non-zero."""
    return coils / coil_rss(coils, eps).unsqueeze(-3)


def normalise_coil_scale(coils: Tensor) -> Tensor:
    """Rescale each batch entry of ``c`` so that the RMS of its RSS over the image is 1.

    ``D`` does not change (``s`` is scale-free), but the smoothness prior does: without this
    the prior would shrink ``c`` towards zero over the iterations and lose its meaning.
    """
    mean_square = (coils.real**2 + coils.imag**2).sum(dim=-3).mean(dim=(-2, -1))
    return coils / mean_square.clamp_min(1e-30).sqrt()[..., None, None, None]


def _batch_weight(weight: Tensor | float, target: Tensor) -> Tensor:
    """A float or ``(B,)`` weight shaped to broadcast over ``target`` ``(B, ...)``."""
    tensor = torch.as_tensor(weight, dtype=target.real.dtype, device=target.device)
    if tensor.ndim == 1:
        tensor = tensor.reshape((-1,) + (1,) * (target.ndim - 1))
    return tensor


@dataclass(frozen=True)
class JointDataTerm:
    """Multi-coil Cartesian data term for the joint image / coil problem.

    Attributes:
        kspace: ``(C, H, W)`` complex64 measured data ``y`` on the normalised scale, zeros
            where not acquired.
        mask: ``(H, W)`` bool sampling mask ``M``.
    """

    kspace: Tensor
    mask: Tensor

    def __post_init__(self) -> None:
        if self.kspace.ndim != 3 or not self.kspace.is_complex():
            raise ValueError(
                f"kspace must be complex (C, H, W), got {self.kspace.dtype} {tuple(self.kspace.shape)}"
            )
        if tuple(self.mask.shape) != tuple(self.kspace.shape[-2:]) or self.mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be bool {tuple(self.kspace.shape[-2:])}, "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}"
            )

    def residual(self, image: Tensor, coils: Tensor) -> Tensor:
        """``r_c = M F(u s_c) - y_c``: ``(B, C, H, W)`` complex."""
        coil_images = image.unsqueeze(-3) * normalised_coils(coils)
        return FFT2Operator().forward(coil_images) * self.mask - self.kspace

    def value(
        self, image: Tensor, coils: Tensor, weight: Tensor | float = 1.0, residual: Tensor | None = None
    ) -> Tensor:
        """``D(u, c)`` per batch entry: ``(B,)``. Pass ``residual`` to skip the forward model."""
        residual = self.residual(image, coils) if residual is None else residual
        squared = (residual.real**2 + residual.imag**2).sum(dim=(-3, -2, -1))
        return 0.5 * _batch_weight(weight, squared) * squared

    def back_projection(self, residual: Tensor) -> Tensor:
        """``g_c = F^H M^H r_c``: ``(B, C, H, W)`` complex coil images."""
        return FFT2Operator().adjoint(residual * self.mask)

    def grad_image(
        self, image: Tensor, coils: Tensor, weight: Tensor | float = 1.0, residual: Tensor | None = None
    ) -> Tensor:
        """``grad_u D``: ``(B, H, W)`` real."""
        residual = self.residual(image, coils) if residual is None else residual
        back = self.back_projection(residual)
        combined = (normalised_coils(coils).conj() * back).sum(dim=-3).real
        return _batch_weight(weight, combined) * combined

    def grad_coils(
        self, image: Tensor, coils: Tensor, weight: Tensor | float = 1.0, residual: Tensor | None = None
    ) -> Tensor:
        """``grad_c D``: ``(B, C, H, W)`` complex (``dD/dRe c + i dD/dIm c``)."""
        residual = self.residual(image, coils) if residual is None else residual
        back = self.back_projection(residual)
        rss = coil_rss(coils).unsqueeze(-3)
        projection = (coils.conj() * back).sum(dim=-3, keepdim=True).real
        grad = image.unsqueeze(-3) * (back / rss - coils * projection / rss**3)
        return _batch_weight(weight, grad) * grad
