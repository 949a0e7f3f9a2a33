"""The damped conjugate-gradient data refinement against a dense solve of the same system."""

from __future__ import annotations

import pytest
import torch
from operator_checks import random_complex

from recon_core.physics.data_term import JointDataTerm, normalised_coils
from recon_core.physics.operators import multicoil_forward_operator
from recon_core.recon.data_consistency import refine_data_consistency

SIZE, COILS = 8, 3


def _problem(seed: int) -> tuple[JointDataTerm, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    coils = random_complex((1, COILS, SIZE, SIZE), generator, "cpu")
    mask = torch.rand(SIZE, SIZE, generator=generator) < 0.6
    truth = random_complex((1, SIZE, SIZE), generator, "cpu")
    operator = multicoil_forward_operator(normalised_coils(coils[0]), mask)
    kspace = operator(truth[0]).to(torch.complex64)
    start = random_complex((1, SIZE, SIZE), generator, "cpu")
    return JointDataTerm(kspace=kspace, mask=mask), coils, start, operator


def _dense_solution(operator, kspace: torch.Tensor, start: torch.Tensor, damping: float) -> torch.Tensor:
    """``(A^H A + beta I)^-1 (A^H y + beta u0)`` with ``A`` as an explicit matrix (complex128)."""
    basis = torch.eye(SIZE * SIZE, dtype=torch.complex128)
    columns = [operator(b.reshape(SIZE, SIZE).to(torch.complex64)).reshape(-1) for b in basis]
    matrix = torch.stack(columns, dim=1).to(torch.complex128)
    normal = matrix.conj().T @ matrix + damping * torch.eye(SIZE * SIZE, dtype=torch.complex128)
    rhs = matrix.conj().T @ kspace.reshape(-1).to(torch.complex128) + damping * start.reshape(-1).to(
        torch.complex128
    )
    return torch.linalg.solve(normal, rhs).reshape(SIZE, SIZE)


@pytest.mark.parametrize("damping", [0.05, 0.5])
def test_refinement_solves_the_damped_normal_equations(damping: float) -> None:
    data_term, coils, start, operator = _problem(1)
    refined = refine_data_consistency(data_term, start, coils, 64, damping)
    expected = _dense_solution(operator, data_term.kspace, start[0], damping)
    error = (refined[0].to(torch.complex128) - expected).abs().max() / expected.abs().max()
    assert float(error) < 1e-4


def test_refinement_reduces_the_data_residual_and_zero_steps_is_the_identity() -> None:
    data_term, coils, start, _ = _problem(2)
    assert refine_data_consistency(data_term, start, coils, 0, 0.1) is start
    before = float(data_term.value(start, coils)[0])
    after = float(data_term.value(refine_data_consistency(data_term, start, coils, 5, 0.0), coils)[0])
    assert after < 0.5 * before


def test_strong_damping_keeps_the_start() -> None:
    data_term, coils, start, _ = _problem(3)
    refined = refine_data_consistency(data_term, start, coils, 20, 1e6)
    assert torch.allclose(refined, start, atol=1e-4)


@pytest.mark.parametrize(("steps", "damping"), [(-1, 0.1), (5, -0.1), (5, float("nan")), (5, float("inf"))])
def test_bad_arguments_are_refused(steps: int, damping: float) -> None:
    data_term, coils, start, _ = _problem(4)
    with pytest.raises(ValueError):
        refine_data_consistency(data_term, start, coils, steps, damping)


def test_per_entry_damping_matches_each_entry_alone() -> None:
    """Slices of a batch (their own data and damping) refine as each would alone."""
    problems = [_problem(seed) for seed in (4, 5)]
    dampings = [0.05, 0.5]
    batched = JointDataTerm(
        kspace=torch.stack([problem[0].kspace for problem in problems]),
        mask=torch.stack([problem[0].mask for problem in problems]),
    )
    coils = torch.cat([problem[1] for problem in problems])
    starts = torch.cat([problem[2] for problem in problems])
    refined = refine_data_consistency(batched, starts, coils, 64, torch.tensor(dampings))
    for entry, (problem, damping) in enumerate(zip(problems, dampings, strict=True)):
        alone = refine_data_consistency(problem[0], problem[2], problem[1], 64, damping)
        assert torch.allclose(refined[entry], alone[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("damping", [-0.1, float("nan"), float("inf")])
def test_bad_damping_is_refused(damping: float) -> None:
    data_term, coils, start, _ = _problem(6)
    with pytest.raises(ValueError, match="damping"):
        refine_data_consistency(data_term, start, coils, 3, torch.tensor([0.1, damping]))
