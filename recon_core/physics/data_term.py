"""The joint data term ``D(u, c)`` of image ``u`` and un-normalised coil maps ``c``.

    D(u, c) = (lambda / 2) * sum_c || M F(u s_c) - y_c ||^2,   s_c = c_c / R,
    R = sqrt(sum_l |c_l|^2 + eps^2)

with ``r`` the k-space residual and ``g_c = F^H M^H r_c`` (docs/ALGORITHM.md section 1):

    grad_u D = lambda * Re( sum_c conj(s_c) g_c )        (real u; without Re for complex u)
    grad_c D = lambda * ( w_c / R - c_c * Re( sum_l conj(c_l) w_l ) / R^3 ),   w_c = conj(u) g_c

Complex gradients follow the convention ``dD/dRe(c) + i dD/dIm(c)`` (what torch autograd
returns for a real loss), so ``c - tau * grad_c D`` is a descent step.

Shapes: ``u`` is ``(B, H, W)`` real (a non-negative magnitude image) or complex (an image that
carries the object phase, see :mod:`recon_core.prior.complex_prior`); ``c`` is ``(B, C, H, W)``
complex; the data ``y`` is ``(C, H, W)`` complex on the normalised scale, zero where not
acquired (or ``(B, C, H, W)``: one slice per batch entry); ``lambda`` is a float or a ``(B,)``
tensor. ``D`` is invariant to a global
rescaling of ``c`` (only ``s`` enters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from recon_core.physics.fourier import centred_ifft
from recon_core.physics.operators import (
    CartesianMaskOperator,
    CoilSensitivityOperator,
    LinearOperator,
    RampedFFT2Operator,
    RampedRowFFTOperator,
    samples_whole_readouts,
)

# Added under the square root of the coil RSS so that s = c / R stays finite where all
# coils vanish; tiny against the normalised coils (RMS of R is 1, see normalise_coil_scale).
COIL_RSS_EPS = 1e-6


def coil_rss(coils: Tensor, eps: float = COIL_RSS_EPS) -> Tensor:
    """``R = sqrt(sum_c |c_c|^2 + eps^2)`` over the coil axis: ``(*batch, C, H, W) -> (*batch, H, W)``."""
    return torch.sqrt((coils.real**2 + coils.imag**2).sum(dim=-3) + eps**2)


def normalised_coils(coils: Tensor, eps: float = COIL_RSS_EPS) -> Tensor:
    """``s = c / R``: RSS-normalised maps, ``sum_c |s_c|^2 = 1`` wherever the coils are non-zero."""
    return coils * coil_rss(coils, eps).reciprocal().unsqueeze(-3)  # faster than a complex / real division


def normalise_coil_scale(coils: Tensor) -> Tensor:
    """Rescale each batch entry of ``c`` so that the RMS of its RSS over the image is 1.

    ``D`` does not change (``s`` is scale-free), but the smoothness prior does: without this
    the prior would shrink ``c`` towards zero over the iterations and lose its meaning.
    """
    mean_square = (coils.real**2 + coils.imag**2).sum(dim=-3).mean(dim=(-2, -1))
    return coils * mean_square.clamp_min(1e-30).rsqrt()[..., None, None, None]


def _batch_weight(weight: Tensor | float, target: Tensor) -> Tensor:
    """A float or ``(B,)`` weight shaped to broadcast over ``target`` ``(B, ...)``."""
    tensor = torch.as_tensor(weight, dtype=target.real.dtype, device=target.device)
    if tensor.ndim == 1:
        tensor = tensor.reshape((-1,) + (1,) * (target.ndim - 1))
    return tensor


@dataclass(frozen=True)
class JointDataTerm:
    """Multi-coil Cartesian data term for the joint image / coil problem.

    Built on the operator layer: ``F`` is :class:`recon_core.physics.operators.RampedFFT2Operator`
    (the centred orthonormal FFT of :class:`~recon_core.physics.operators.FFT2Operator`
    evaluated as ``phi * fft2(psi * x)`` with fixed phase ramps instead of two ``fftshift``
    copies), ``M`` :class:`~recon_core.physics.operators.CartesianMaskOperator` and ``S``
    :class:`~recon_core.physics.operators.CoilSensitivityOperator`. Residuals are kept in the
    "unshifted" representation ``r' = conj(phi) * r``, which has the same norm as ``r``;
    only :meth:`residual` / :meth:`value` / the gradients consume them. Where the mask samples
    whole readouts (:func:`~recon_core.physics.operators.samples_whole_readouts`), ``F`` is
    :class:`~recon_core.physics.operators.RampedRowFFTOperator` and the residuals live in the
    hybrid ``(ky, x)`` space instead (the data moved there once, ``F_x^H y``): same norms, same
    gradients, half the FFT work.

    Two or more coil-map sets (soft SENSE, for objects wider than the field of view): with
    ``extra_maps`` ``(S - 1, C, H, W)`` fixed RSS-weighted maps, the image is ``(B, S, H, W)``
    and the model ``y = M F( u_1 s + sum_m u_m t_m )``: set 1 (``s = c / R``) is the jointly
    estimated one, sets ``m >= 2`` (``t_m``, ESPIRiT's further eigenvectors) stay fixed.

    Attributes:
        kspace: ``(C, H, W)`` complex64 measured data ``y`` on the normalised scale, zeros
            where not acquired; or ``(B, C, H, W)``: one slice per batch entry (several slices
            of a series solved in one batch, :mod:`recon_core.recon.batch`).
        mask: ``(H, W)`` bool sampling mask ``M``, or ``(B, H, W)``: one mask per batch entry
            (the jackknife's replicates, :mod:`recon_core.recon.jackknife`, each see the data
            with some lines left out; batched slices each have their own). With a per-entry
            mask or data the batch of every image and coil argument must be ``B``.
        extra_maps: ``(S - 1, C, H, W)`` complex64 fixed further map sets, or ``None``.
    """

    kspace: Tensor
    mask: Tensor
    extra_maps: Tensor | None = None
    _fft: LinearOperator = field(init=False, repr=False)
    _kspace_unshifted: Tensor = field(init=False, repr=False)
    _sampling: CartesianMaskOperator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kspace.ndim not in (3, 4) or not self.kspace.is_complex():
            raise ValueError(
                f"kspace must be complex (C, H, W) or (B, C, H, W), got {self.kspace.dtype} "
                f"{tuple(self.kspace.shape)}"
            )
        if self.kspace.ndim == 4 and self.mask.ndim == 3 and self.mask.shape[0] != self.kspace.shape[0]:
            raise ValueError(
                f"per-entry kspace {tuple(self.kspace.shape)} and masks {tuple(self.mask.shape)} "
                "must have the same batch size"
            )
        if (
            self.mask.ndim not in (2, 3)
            or tuple(self.mask.shape[-2:]) != tuple(self.kspace.shape[-2:])
            or self.mask.dtype != torch.bool
        ):
            raise ValueError(
                f"mask must be bool {tuple(self.kspace.shape[-2:])} or (B, "
                f"{', '.join(str(n) for n in self.kspace.shape[-2:])}), "
                f"got {self.mask.dtype} {tuple(self.mask.shape)}"
            )
        height, width = self.kspace.shape[-2:]
        fft: RampedFFT2Operator | RampedRowFFTOperator
        if samples_whole_readouts(self.mask):
            fft = RampedRowFFTOperator(height, self.kspace.device)
            data = centred_ifft(self.kspace, -1)  # to the hybrid (ky, x) space; masked below
        else:
            fft = RampedFFT2Operator(height, width, self.kspace.device)
            data = self.kspace
        # A (B, H, W) mask broadcasts over the coil axis as (B, 1, H, W).
        mask = self.mask if self.mask.ndim == 2 else self.mask.unsqueeze(1)
        object.__setattr__(self, "_fft", fft)
        object.__setattr__(self, "_sampling", CartesianMaskOperator(mask, self.kspace.real.dtype))
        object.__setattr__(
            self, "_kspace_unshifted", (fft.kspace_phase.conj() * data * mask).to(self.kspace.dtype)
        )

    @property
    def measured_unshifted(self) -> Tensor:
        """``conj(phi) M y`` (or ``conj(phi) M F_x^H y`` on the row path): the data in the
        residual's representation, ``(C, H, W)`` complex (``(B, C, H, W)`` with per-entry masks)."""
        return self._kspace_unshifted

    def residual(self, image: Tensor, coils: Tensor, maps: Tensor | None = None) -> Tensor:
        """``r' = conj(phi) (M F(u s_c) - y_c)``: ``(B, C, H, W)`` complex (norm of the residual).

        ``maps``: ``normalised_coils(coils)`` if the caller already has it (steps that keep the
        coils fixed compute it once).
        """
        maps = normalised_coils(coils) if maps is None else maps
        return (
            self._sampling.forward(self._fft.forward(self._coil_images(image, maps))) - self._kspace_unshifted
        )

    def _coil_images(self, image: Tensor, maps: Tensor) -> Tensor:
        """``S u``: ``(B, C, H, W)`` (with map sets ``u_1 s + sum_m u_m t_m``)."""
        if self.extra_maps is None:
            return CoilSensitivityOperator(maps).forward(image)
        further = CoilSensitivityOperator(self.extra_maps).forward(image[:, 1:]).sum(1)
        return CoilSensitivityOperator(maps).forward(image[:, 0]) + further

    def _combine_coils(self, back: Tensor, image: Tensor, maps: Tensor) -> Tensor:
        """``S^H g`` for coil images ``g`` ``(B, C, H, W)``: shaped and typed like ``image``."""
        combined = CoilSensitivityOperator(maps).adjoint(back)
        if self.extra_maps is not None:
            others = CoilSensitivityOperator(self.extra_maps).adjoint(back.unsqueeze(1))
            combined = torch.cat((combined.unsqueeze(1), others), dim=1)
        return combined if image.is_complex() else combined.real

    def normal(self, image: Tensor, maps: Tensor) -> Tensor:
        """``A^H A u`` (``A = M F S``, the coils fixed, ``maps = normalised_coils(coils)``): the
        data term's Hessian applied to ``image``, shaped and typed like it. Cheaper than
        :meth:`grad_image` of a residual without data (``M`` once, no data subtracted)."""
        kspace = self._sampling.forward(self._fft.forward(self._coil_images(image, maps)))
        return self._combine_coils(self._fft.adjoint(kspace), image, maps)

    def value(
        self, image: Tensor, coils: Tensor, weight: Tensor | float = 1.0, residual: Tensor | None = None
    ) -> Tensor:
        """``D(u, c)`` per batch entry: ``(B,)``. Pass ``residual`` to skip the forward model."""
        residual = self.residual(image, coils) if residual is None else residual
        squared = torch.view_as_real(residual).square().sum(dim=(-4, -3, -2, -1))
        return 0.5 * _batch_weight(weight, squared) * squared

    def back_projection(self, residual: Tensor) -> Tensor:
        """``g_c = F^H M^H r_c`` from a residual of :meth:`residual`: ``(B, C, H, W)`` complex."""
        return self._fft.adjoint(self._sampling.adjoint(residual))

    def grad_image(
        self,
        image: Tensor,
        coils: Tensor,
        weight: Tensor | float = 1.0,
        residual: Tensor | None = None,
        maps: Tensor | None = None,
    ) -> Tensor:
        """``grad_u D``: ``(B, H, W)``, real for a real image, complex for a complex one
        (``maps`` as in :meth:`residual`)."""
        maps = normalised_coils(coils) if maps is None else maps
        residual = self.residual(image, coils, maps) if residual is None else residual
        combined = self._combine_coils(self.back_projection(residual), image, maps)
        return _batch_weight(weight, combined) * combined

    def grad_coils(
        self, image: Tensor, coils: Tensor, weight: Tensor | float = 1.0, residual: Tensor | None = None
    ) -> Tensor:
        """``grad_c D``: ``(B, C, H, W)`` complex (``dD/dRe c + i dD/dIm c``)."""
        residual = self.residual(image, coils) if residual is None else residual
        back = self.back_projection(residual)
        inverse_rss = coil_rss(coils).reciprocal().unsqueeze(-3)
        first = image if self.extra_maps is None else image[:, 0]
        weighted = (first.conj() if first.is_complex() else first).unsqueeze(-3) * back
        projection = (coils.conj() * weighted).sum(dim=-3, keepdim=True).real
        # (w - c * projection / R^2) / R, the per-pixel factors formed on one coil's grid.
        grad = weighted.sub_(coils * (projection * inverse_rss.square())).mul_(inverse_rss)
        if isinstance(weight, float) and weight == 1.0:
            return grad
        return grad.mul_(_batch_weight(weight, grad))
