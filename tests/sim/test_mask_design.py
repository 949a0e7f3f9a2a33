"""Learned sampling patterns: the straight-through selection, the one-step Tweedie estimate,
its gradient, determinism, the command line, and clear errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_core.physics.data_term import normalised_coils
from recon_core.prior import load_prior
from recon_core.sim.mask_design import (
    DesignConfig,
    check_design,
    design_mask,
    forced_lines,
    initial_logits,
    mirrored,
    straight_through_lines,
)
from recon_core.sim.mask_design_cli import main, point_spread
from recon_core.sim.mask_estimates import (
    DifferentiableScore,
    conjugate_gradient,
    simulate_batch,
    tweedie_posterior_mean,
    unrolled_posterior_mean,
)
from recon_core.sim.masks import centre_lines, spread_lines_mask, variable_density_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

SHAPE = (32, 40)


@pytest.fixture(scope="module")
def prior():
    return load_prior("shearlet").tabulated()


def _coils(batch: int, num_coils: int = 4) -> torch.Tensor:
    maps = normalised_coils(birdcage_coil_maps(num_coils, *SHAPE))
    return maps.unsqueeze(0).repeat(batch, 1, 1, 1)


def _batch(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    image = shepp_logan(*SHAPE)
    flips = torch.rand(batch, generator=generator) < 0.5
    images = torch.stack([image.flip(1) if flip else image for flip in flips.tolist()])
    return images, _coils(batch)


@pytest.mark.parametrize(
    ("count", "centre", "temperature"), [(1, 0, 1.0), (8, 0, 0.1), (12, 5, 0.5), (32, 4, 1.0)]
)
def test_straight_through_forward_is_exactly_n_lines(count: int, centre: int, temperature: float) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(32, generator=generator, requires_grad=True)
    forced = forced_lines(32, centre)
    for _ in range(5):
        mask = straight_through_lines(logits, count, temperature, forced, generator)
        assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
        assert int(mask.detach().sum()) == count
        assert bool(mask.detach()[forced].eq(1.0).all())
    deterministic = straight_through_lines(logits.detach(), count, 1.0, forced, None)
    free = logits.detach().masked_fill(forced, -math.inf)
    expected = set(torch.topk(free, count - centre).indices.tolist()) | set(centre_lines(32, centre).tolist())
    assert set(torch.nonzero(deterministic).flatten().tolist()) == expected


def test_tweedie_estimate_is_the_denoiser_without_lines(prior) -> None:
    generator = torch.Generator().manual_seed(0)
    images, coils = _batch(2, generator)
    sigma = torch.tensor([0.1, 0.3])
    diffused, kspace = simulate_batch(images, coils, sigma, 0.02, generator)
    estimate = tweedie_posterior_mean(prior, diffused, sigma, torch.zeros(SHAPE[0]), coils, kspace, 0.02)
    expected = prior.denoise(diffused, sigma)
    assert torch.allclose(estimate.real, expected, atol=1e-6)
    assert float(estimate.imag.abs().max()) == 0.0


def test_tweedie_estimate_with_every_line_is_the_gaussian_posterior_mean(prior) -> None:
    """All lines measured and ``sum |s_c|^2 = 1``: ``A^H A = I``, so the Gaussian posterior
    mean is the precision-weighted average of ``D`` and the coil-combined data."""
    generator = torch.Generator().manual_seed(1)
    images, coils = _batch(2, generator)
    sigma = torch.tensor([0.2, 0.05])
    diffused, kspace = simulate_batch(images, coils, sigma, 0.05, generator)
    estimate = tweedie_posterior_mean(prior, diffused, sigma, torch.ones(SHAPE[0]), coils, kspace, 0.05, 3)
    from recon_core.physics.operators import FFT2Operator

    combined = (coils.conj() * FFT2Operator().adjoint(kspace)).sum(dim=1)
    weight_prior = 1.0 / sigma[:, None, None] ** 2
    weight_data = 1.0 / 0.05**2
    expected = (weight_prior * prior.denoise(diffused, sigma) + weight_data * combined) / (
        weight_prior + weight_data
    )
    assert torch.allclose(estimate, expected, atol=1e-4)


def test_conjugate_gradient_solves_a_dense_system() -> None:
    generator = torch.Generator().manual_seed(2)
    size = 12
    base = torch.randn(size, size, generator=generator, dtype=torch.complex128)
    matrix = base @ base.conj().T + size * torch.eye(size, dtype=torch.complex128)
    rhs = torch.randn(1, 3, 4, generator=generator, dtype=torch.complex128)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return (matrix @ x.reshape(1, size, 1)).reshape(1, 3, 4)

    solution = conjugate_gradient(apply, rhs, torch.zeros_like(rhs), size)
    expected = torch.linalg.solve(matrix, rhs.reshape(size))
    assert torch.allclose(solution.reshape(size), expected, atol=1e-8)


def test_gradient_with_respect_to_logits_is_finite_and_non_zero(prior) -> None:
    generator = torch.Generator().manual_seed(4)
    images, coils = _batch(2, generator)
    sigma = torch.tensor([0.1, 0.4])
    diffused, kspace = simulate_batch(images, coils, sigma, 0.02, generator)
    logits = torch.zeros(SHAPE[0], requires_grad=True)
    mask = straight_through_lines(logits, 10, 0.5, forced_lines(SHAPE[0], 4), generator)
    estimate = tweedie_posterior_mean(prior, diffused, sigma, mask, coils, kspace, 0.02, 4)
    (estimate - images).abs().square().mean().backward()
    assert logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    assert float(logits.grad.abs().max()) > 0.0


def test_design_is_deterministic_for_a_seed_and_keeps_the_budget(prior) -> None:
    config = DesignConfig(
        lines=9, centre=3, steps=3, batch=1, cg_iterations=2, candidates=2, validation_batch=1, seed=7
    )
    first = design_mask(prior, _batch, SHAPE, config)
    second = design_mask(prior, _batch, SHAPE, config)
    assert torch.equal(first.mask, second.mask) and first.losses == second.losses
    assert first.mask.dtype == torch.bool and first.mask.shape == (SHAPE[0],)
    assert int(first.mask.sum()) == 9
    assert bool(first.mask[torch.as_tensor(centre_lines(SHAPE[0], 3))].all())
    assert all(math.isfinite(loss) for loss in first.losses)
    assert len(first.validation_losses) == 3 and all(math.isfinite(v) for v in first.validation_losses)
    diffused = DesignConfig(
        lines=9, centre=3, steps=2, batch=1, estimator="diffused", candidates=1, validation_batch=1
    )
    assert int(design_mask(prior, _batch, SHAPE, diffused).mask.sum()) == 9


def test_mirrored_logits_are_symmetric_and_initial_logits_favour_the_centre() -> None:
    logits = torch.randn(32, generator=torch.Generator().manual_seed(5))
    symmetric = mirrored(logits)
    offsets = torch.arange(1, 16)
    assert torch.equal(symmetric[16 + offsets], symmetric[16 - offsets])
    assert symmetric[0] == logits[0]  # no mirror on an even grid
    initial = initial_logits(33, 2.0)
    assert (
        initial[16] == 0.0
        and bool((initial[16:].diff() < 0).all())
        and torch.allclose(initial, initial.flip(0))
    )


@pytest.mark.parametrize(
    ("shape", "lines", "centre", "message"),
    [
        ((32, 40), 33, 0, "only 32 phase-encode lines"),
        ((32, 40), 0, 0, "must be >= 1"),
        ((32, 40), 5, 6, "centre lines"),
        ((8, 40), 4, 0, "sides in"),
        ((32, 40, 2), 4, 0, "shape must be"),
    ],
)
def test_clear_errors(shape: tuple[int, ...], lines: int, centre: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_design(shape, lines, centre)  # type: ignore[arg-type]


def test_cli_rejects_too_many_lines(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--shape", "40", "32", "--lines", "40", "-o", str(tmp_path / "m.npy")])
    assert raised.value.code == 2
    assert "only 32 phase-encode lines" in capsys.readouterr().err


def test_cli_writes_mask_line_list_and_png(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    np.save(folder / "phantom.npy", shepp_logan(48, 48).numpy())
    output = tmp_path / "mask.npy"
    argv = [
        "--shape",
        "40",
        "32",
        "--lines",
        "8",
        "--centre",
        "4",
        "-o",
        str(output),
        "--steps",
        "2",
        "--batch",
        "1",
        "--coils",
        "2",
        "--data",
        str(folder),
        "--png",
        str(tmp_path / "m.png"),
        "--no-progress",
    ]
    assert main(argv) == 0
    mask = np.load(output)
    assert mask.dtype == bool and mask.shape == (32,) and int(mask.sum()) == 8
    rows = [line for line in output.with_suffix(".txt").read_text().splitlines() if not line.startswith("#")]
    assert [int(row.split()[0]) for row in rows] == np.flatnonzero(mask).tolist()
    assert [int(row.split()[1]) for row in rows] == (np.flatnonzero(mask) - 16).tolist()
    assert (tmp_path / "m.png").stat().st_size > 0


def test_point_spread_of_full_sampling_is_a_delta() -> None:
    psf = point_spread(np.ones(16, dtype=bool))
    assert psf[8] == pytest.approx(1.0) and float(np.delete(psf, 8).max()) < 1e-12


@pytest.mark.parametrize(("lines", "centre"), [(45, 14), (22, 7), (5, 0)])
def test_variable_density_and_spread_masks_keep_count_and_centre(lines: int, centre: int) -> None:
    shape = (180, 4)
    for mask in (
        variable_density_lines_mask(shape, lines, centre, seed=1),
        spread_lines_mask(shape, lines, centre),
    ):
        per_line = mask[:, 0]
        assert bool((mask == per_line[:, None]).all())
        assert int(per_line.sum()) == lines
        assert bool(per_line[torch.as_tensor(centre_lines(180, centre), dtype=torch.long)].all())
    assert torch.equal(
        variable_density_lines_mask(shape, lines, centre, 2),
        variable_density_lines_mask(shape, lines, centre, 2),
    )
    with pytest.raises(ValueError):
        variable_density_lines_mask(shape, 181, 0)


def test_undersampled_raw_keeps_the_listed_lines_and_moves_the_slice_flags(
    shared_data: Path, tmp_path: Path
) -> None:
    import ismrmrd

    from gadgets.replay.undersample import read_lines, undersample_raw

    mask = np.zeros(180, dtype=bool)
    mask[[3, 50, 88, 89, 90, 91, 179]] = True
    np.save(tmp_path / "mask.npy", mask)
    target = tmp_path / "sub.h5"
    assert (
        undersample_raw(
            shared_data / "berkeley_brain8ch" / "raw_full.h5", read_lines(tmp_path / "mask.npy"), target
        )
        == 7
    )
    dataset = ismrmrd.Dataset(str(target), "dataset", False)
    try:
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    finally:
        dataset.close()
    assert [a.idx.kspace_encode_step_1 for a in acquisitions] == np.flatnonzero(mask).tolist()
    assert acquisitions[0].is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE)
    assert acquisitions[-1].is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE)
    assert not any(a.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) for a in acquisitions[:-1])


def test_differentiable_score_matches_the_tabulated_score_and_carries_gradients(prior) -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.rand(2, *SHAPE, generator=generator, requires_grad=True)
    score = DifferentiableScore(prior)
    value = score(x, 0.1)
    assert torch.allclose(value.detach(), prior.score(x.detach(), 0.1), atol=1e-6)
    value.square().sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().max()) > 0
    complex_x = torch.complex(x.detach(), x.detach().flip(-1))
    parts = score(complex_x, 0.1)
    assert torch.allclose(parts.imag, prior.score(x.detach().flip(-1), 0.1), atol=1e-6)


def test_unrolled_estimate_with_every_line_and_little_noise_recovers_the_image(prior) -> None:
    generator = torch.Generator().manual_seed(8)
    images, coils = _batch(2, generator)
    _, kspace = simulate_batch(images, coils, torch.full((2,), 0.1), 1e-4, generator)
    estimate = unrolled_posterior_mean(
        DifferentiableScore(prior), torch.ones(SHAPE[0]), coils, kspace, (0.1, 0.05), 1e-4, 4
    )
    assert float((estimate - images).abs().max()) < 1e-2
