"""The MAP image step's step-size control (Lipschitz-capped growth and retries)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm, normalised_coils
from recon_core.physics.operators import FFT2Operator
from recon_core.recon.joint_steps import image_step
from recon_core.sim.masks import random_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan


class FlatPrior:
    """``E = 0``: the image step then minimises the data term alone (a quadratic)."""

    def energy(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return x.new_zeros(x.shape[0]).real

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return torch.zeros_like(x)


def _problem(mask: Tensor) -> tuple[JointDataTerm, Tensor, Tensor]:
    image = shepp_logan(32).to(torch.complex64)
    coils = birdcage_coil_maps(4, 32, 32)
    kspace = FFT2Operator().forward(normalised_coils(coils) * image) * mask
    return JointDataTerm(kspace=kspace, mask=mask), image[None], coils[None]


def test_steps_stay_within_the_measured_lipschitz_bound_and_descend() -> None:
    data_term, truth, coils = _problem(random_lines_mask((32, 32), 2.0, 0.2, seed=0))
    image, step = torch.zeros_like(truth), torch.tensor([1.0])
    values = [float(data_term.value(image, coils))]
    for _ in range(20):
        result = image_step(data_term, FlatPrior(), image, coils, step, 1.0, 0.0)
        image, step = result.image, result.step
        values.append(float(data_term.value(image, coils)))
        # ||A|| <= 1 for RSS-normalised coils and an orthonormal FFT: 1 / L >= 1, so the next
        # trial step (step * STEP_GROWTH) stays positive and the bound keeps it finite.
        assert 0.0 < float(step) < 10.0
    assert all(later <= earlier * (1 + 1e-6) for earlier, later in itertools.pairwise(values))
    assert values[-1] < 0.05 * values[0]


def test_a_stationary_point_keeps_a_usable_step() -> None:
    """Zero data and a zero image: the gradient is exactly zero and nothing moves. The step is
    accepted and keeps its size (it must not collapse to zero, which would freeze every later
    step)."""
    data_term, truth, coils = _problem(torch.ones(32, 32, dtype=torch.bool))
    silent = JointDataTerm(kspace=torch.zeros_like(data_term.kspace), mask=data_term.mask)
    image = torch.zeros_like(truth)
    result = image_step(silent, FlatPrior(), image, coils, torch.tensor([0.5]), 1.0, 0.0)
    assert torch.equal(result.image, image)
    assert float(result.step) > 0.5
