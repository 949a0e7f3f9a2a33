"""Two coil-map sets (soft SENSE) for objects wider than the field of view.

Where an object extends beyond the phase-encode field of view, its folded-in part is seen by
the coils with a different sensitivity than the part it overlaps, so one map per coil cannot
model the data. ESPIRiT shows it as a second eigenvalue of ~1 in the overlap
(:mod:`recon_core.physics.espirit`). The image model then carries one image per map set,
``y = M F(u_1 s_1 + u_2 s_2)``, and the displayed image is their root sum of squares.

* :func:`needs_second_set` decides from the data: the second eigenvalue exceeds
  ``SECOND_SET_EIGENVALUE`` on at least ``SECOND_SET_FRACTION`` of the pixels whose first
  eigenvalue does (the object).
* :func:`second_set_maps` is ESPIRiT's second eigenvector, kept where its eigenvalue is
  high (a smooth soft crop) and zero elsewhere, so that ``u_2`` lives only in the overlap.
* :class:`MapSetPrior` applies an image prior to every set's image: ``(B, S, H, W)``.
"""

from __future__ import annotations

from torch import Tensor

from recon_core.prior.base import DiffusionImagePrior

SECOND_SET_EIGENVALUE = 0.9
SECOND_SET_FRACTION = 0.02
# Soft crop of the second set: weight 0 below CROP_LOW, 1 above CROP_HIGH, linear between.
CROP_LOW, CROP_HIGH = 0.8, 0.95


def second_set_fraction(eigenvalues: Tensor) -> float:
    """Fraction of object pixels (first eigenvalue above the threshold) where the second
    eigenvalue is above it too. ``eigenvalues``: ``(S >= 2, H, W)``."""
    first = eigenvalues[0] > SECOND_SET_EIGENVALUE
    if not bool(first.any()):
        return 0.0
    second = (eigenvalues[1] > SECOND_SET_EIGENVALUE) & first
    return float(second.sum()) / float(first.sum())


def needs_second_set(eigenvalues: Tensor) -> bool:
    """Whether the data need a second map set (module docstring)."""
    return eigenvalues.shape[0] >= 2 and second_set_fraction(eigenvalues) >= SECOND_SET_FRACTION


def second_set_maps(maps: Tensor, eigenvalues: Tensor) -> Tensor:
    """``(1, C, H, W)``: the second eigenvector ``maps[1]`` times its soft crop weight."""
    weight = ((eigenvalues[1] - CROP_LOW) / (CROP_HIGH - CROP_LOW)).clamp(0.0, 1.0)
    return (maps[1] * weight).unsqueeze(0)


class MapSetPrior:
    """Applies ``prior`` to each set's image: ``x`` ``(B, S, H, W)`` -> per-set energies summed.

    Satisfies :class:`DiffusionImagePrior` for ``(B, S, H, W)`` inputs; ``sigma`` is a float
    (one level for all sets) or ``(B,)``.
    """

    def __init__(self, prior: DiffusionImagePrior) -> None:
        self.prior = prior

    @staticmethod
    def _flat(x: Tensor) -> Tensor:
        return x.reshape(-1, *x.shape[-2:])

    @staticmethod
    def _sigma(sigma: Tensor | float, sets: int) -> Tensor | float:
        if isinstance(sigma, Tensor) and sigma.ndim == 1:
            return sigma.repeat_interleave(sets)
        return sigma

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """``sum_m E(x_m, sigma)`` per batch entry: ``(B,)``."""
        energies = self.prior.energy(self._flat(x), self._sigma(sigma, x.shape[1]))
        return energies.reshape(x.shape[0], x.shape[1]).sum(dim=1)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """Each set's score: ``(B, S, H, W)``."""
        return self.prior.score(self._flat(x), self._sigma(sigma, x.shape[1])).reshape(x.shape)
