"""The MAP image step's step-size control (Lipschitz-capped growth and retries)."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm, normalise_coil_scale, normalised_coils
from recon_core.physics.operators import FFT2Operator
from recon_core.recon.joint_steps import STEP_GROWTH, coil_step, image_step
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


def test_an_unchecked_step_takes_the_first_trial_step_and_grows_it() -> None:
    """``check=False``: the candidate a checked step tries first, its residual, no gradient, and
    the grown step returned as if accepted."""
    data_term, truth, coils = _problem(random_lines_mask((32, 32), 2.0, 0.2, seed=0))
    image, step = 0.5 * truth, torch.tensor([0.3])
    unchecked = image_step(data_term, FlatPrior(), image, coils, step, 1.0, 0.0, check=False)
    checked = image_step(data_term, FlatPrior(), image, coils, step, 1.0, 0.0)
    assert float(checked.step) <= float(unchecked.step) == float(torch.tensor(0.3) * STEP_GROWTH)
    torch.testing.assert_close(unchecked.image, checked.image)  # the first trial passed the test
    torch.testing.assert_close(unchecked.residual, data_term.residual(unchecked.image, coils))
    assert unchecked.gradient is None and checked.gradient is not None


def test_a_coil_step_centred_on_the_true_maps_keeps_them_and_one_centred_on_zero_does_not() -> None:
    """Coils with detail (a phase ripple) that the thin-plate prior dislikes, the true image and
    noise-free data: the data gradient vanishes, so the coil step is the prox alone. Centred on
    the true maps (``anchor``, the ESPIRiT start in the reconstruction) it leaves them and the
    zero residual in place; centred on zero it smooths them and the data no longer fit."""
    rows = torch.arange(32, dtype=torch.float32)[:, None]
    ripple = torch.polar(torch.ones(32, 32), 1.5 * torch.cos(2 * torch.pi * 4 * rows / 32))
    coils = normalise_coil_scale(birdcage_coil_maps(4, 32, 32) * ripple)
    image = shepp_logan(32).to(torch.complex64)
    mask = random_lines_mask((32, 32), 2.0, 0.2, seed=0)
    data_term = JointDataTerm(
        kspace=FFT2Operator().forward(normalised_coils(coils) * image) * mask, mask=mask
    )
    step = torch.tensor([1.0])
    anchored = coil_step(data_term, image[None], coils[None], step, 10.0, order=2, anchor=coils)
    centred_on_zero = coil_step(data_term, image[None], coils[None], step, 10.0, order=2)
    scale = float(data_term.value(torch.zeros_like(image)[None], coils[None]))
    assert float(data_term.value(image[None], anchored.coils)) < 1e-10 * scale
    torch.testing.assert_close(
        normalised_coils(anchored.coils[0]), normalised_coils(coils), rtol=0, atol=1e-5
    )
    assert float(data_term.value(image[None], centred_on_zero.coils)) > 1e-3 * scale
