"""Slices of a series solved in one batch give what each gives alone (recon_core.recon.batch)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from smooth_prior import SmoothTVPrior

import recon_core.recon.batch as batch_module
from recon_core.physics.data_term import JointDataTerm
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator
from recon_core.prior import default_weights_path, load_inference_prior
from recon_core.recon.batch import reconstruct_batch
from recon_core.recon.config import ReconConfig, load_preset
from recon_core.recon.map_solver import solve_map
from recon_core.recon.reconstruction import ReconResult, configured_map, reconstruct
from recon_core.sim.masks import equispaced_lines_mask, random_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

COILS = 6


def _slice(size: int, noise_std: float, mask: torch.Tensor, seed: int, shift: int = 0) -> KSpaceSlice:
    """A phantom slice (rolled by ``shift`` pixels so slices differ) with noise ``noise_std``."""
    image = torch.roll(shepp_logan(size), shift, dims=1)
    kspace = FFT2Operator().forward(birdcage_coil_maps(COILS, size, size) * image)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.complex(
        torch.randn(kspace.shape, generator=generator), torch.randn(kspace.shape, generator=generator)
    )
    return KSpaceSlice(kspace=((kspace + noise_std * noise) * mask).to(torch.complex64), mask=mask)


def _config(device: torch.device, **changes: object) -> ReconConfig:
    base = dataclasses.replace(
        load_preset("fast"),
        device=device.type,
        map_iterations=30,
        data_consistency_steps=20,
        scale_region=0.5,
    )
    return dataclasses.replace(base, **changes)


def _series(size: int = 48) -> list[KSpaceSlice]:
    """Three slices with their own noise (so their own schedules), masks and coil starts."""
    return [
        _slice(size, 0.001, random_lines_mask((size, size), 4.0, 0.08, seed=0), seed=1),
        _slice(size, 0.004, random_lines_mask((size, size), 3.0, 0.1, seed=1), seed=2, shift=2),
        _slice(size, 0.002, equispaced_lines_mask((size, size), 3, 16), seed=3, shift=-1),
    ]


def _relative_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    return float((first - second).norm() / second.norm())


def _tolerance(device: torch.device) -> float:
    """With several threads (or CUDA) batched and single solves split their reductions
    differently, and the non-convex solver can amplify the rounding (docs/benchmarks.md); a CPU
    stays within 1e-4 here, CUDA is given 1e-3. A wrong per-slice schedule differs by 2e-2 or more."""
    return 1e-4 if device.type == "cpu" else 1e-3


@pytest.mark.parametrize("image_model", ["complex", "magnitude"])
def test_batch_gives_each_slice_what_it_gives_alone(image_model: str, device: torch.device) -> None:
    slices = [data.to(device) for data in _series()]
    config = _config(device, image_model=image_model)
    alone = [reconstruct(data, config, SmoothTVPrior()) for data in slices]
    together = reconstruct_batch(slices, config, SmoothTVPrior())
    assert {result.info["coil_start"] for result in alone} == {"lowpass", "espirit"}
    for single, batched in zip(alone, together, strict=True):
        assert isinstance(batched, ReconResult)
        # The random-line slices share a batch; the ESPIRiT-anchored one is solved on its own.
        expected_batch = 1 if single.info["coil_start"] == "espirit" else 2
        assert batched.info["batch_slices"] == expected_batch
        assert batched.image.shape == single.image.shape and batched.image.dtype == torch.float32
        assert _relative_difference(batched.image, single.image) < _tolerance(device)
        assert _relative_difference(batched.coil_maps, single.coil_maps) < 10 * _tolerance(device)
        assert batched.info["noise_std"] == single.info["noise_std"]
        assert batched.info["data_weight"] == single.info["data_weight"]


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped prior weights are missing")
def test_batch_with_the_shipped_prior_and_per_slice_levels(device: torch.device) -> None:
    """The tabulated PoGMDM at a different level per slice (each level's own table, stacked)."""
    size = 40
    mask = random_lines_mask((size, size), 3.0, 0.1, seed=4)
    slices = [
        _slice(size, noise, mask, seed, shift).to(device)
        for noise, seed, shift in ((0.001, 5, 0), (0.005, 6, 3))
    ]
    config = _config(device, map_iterations=20)
    prior = load_inference_prior("", device)
    alone = [reconstruct(data, config, prior) for data in slices]
    together = reconstruct_batch(slices, config, prior)
    assert alone[0].info["sigmas"] != alone[1].info["sigmas"]
    for single, batched in zip(alone, together, strict=True):
        assert isinstance(batched, ReconResult) and batched.info["batch_slices"] == 2
        assert _relative_difference(batched.image, single.image) < _tolerance(device)


def test_on_one_thread_a_batch_is_bit_for_bit_each_slice_alone() -> None:
    """Same float32 arithmetic for a shared and a per-entry schedule: the image does not depend on
    which slices shared its batch (more threads split reductions by shape, see _tolerance)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        device = torch.device("cpu")
        slices = _series(32)
        config = _config(device, map_iterations=20)
        alone = [reconstruct(data, config, SmoothTVPrior()) for data in slices[:2]]
        together = reconstruct_batch(slices[:2], config, SmoothTVPrior())
    finally:
        torch.set_num_threads(threads)
    for single, batched in zip(alone, together, strict=True):
        assert isinstance(batched, ReconResult) and batched.info["batch_slices"] == 2
        assert torch.equal(batched.image, single.image)
        assert torch.equal(batched.coil_maps, single.coil_maps)


def test_a_bad_slice_fails_alone_and_odd_shapes_are_solved_alone(device: torch.device) -> None:
    size = 32
    mask = random_lines_mask((size, size), 3.0, 0.1, seed=0)
    good = [_slice(size, 0.002, mask, seed).to(device) for seed in (1, 2)]
    empty = KSpaceSlice(kspace=torch.zeros(COILS, size, size, dtype=torch.complex64), mask=mask).to(device)
    other_shape = _slice(40, 0.002, random_lines_mask((40, 40), 3.0, 0.1, seed=0), 3).to(device)
    results = reconstruct_batch([good[0], empty, other_shape, good[1]], _config(device), SmoothTVPrior())
    assert isinstance(results[1], ValueError) and "noise" in str(results[1])
    assert [result.info["batch_slices"] for result in results if isinstance(result, ReconResult)] == [2, 1, 2]
    assert results[2].image.shape == (40, 40)  # type: ignore[union-attr]


def test_a_failed_joint_solve_falls_back_to_one_slice_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    device = torch.device("cpu")
    slices = _series(32)[:2]
    calls: list[int] = []

    def solve_only_one(*args: object, **kwargs: object) -> object:
        image = args[3]
        assert isinstance(image, torch.Tensor)
        calls.append(image.shape[0])
        if image.shape[0] > 1:
            raise RuntimeError("out of device memory")
        return configured_map(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_module, "configured_map", solve_only_one)
    results = reconstruct_batch(slices, _config(device), SmoothTVPrior())
    assert calls == [2]  # the joint solve was tried; the single solves go through reconstruction
    assert all(isinstance(result, ReconResult) and result.info["batch_slices"] == 1 for result in results)


def test_other_methods_solve_each_slice_alone() -> None:
    device = torch.device("cpu")
    slices = _series(32)[:2]
    config = _config(device, method="posterior", num_chains=2, num_noise_levels=3, steps_per_level=2)
    results = reconstruct_batch(slices, config, SmoothTVPrior())
    alone = reconstruct(slices[1], config, SmoothTVPrior())
    assert all(isinstance(result, ReconResult) and result.info["batch_slices"] == 1 for result in results)
    assert torch.equal(results[1].image, alone.image)  # type: ignore[union-attr]


def test_per_entry_schedules_must_match_the_batch() -> None:
    data = _series(32)[0]
    coils = torch.ones(2, COILS, 32, 32, dtype=torch.complex64)
    term = JointDataTerm(kspace=data.kspace, mask=data.mask)
    image = torch.zeros(2, 32, 32)
    with pytest.raises(ValueError, match=r"per-entry schedule must be \(T, 2\)"):
        solve_map(term, SmoothTVPrior(), image, coils, torch.ones(3, 3), torch.ones(3, 3), 1.0)
    with pytest.raises(ValueError, match="one weight per sigma"):
        solve_map(term, SmoothTVPrior(), image, coils, [0.1] * 3, torch.ones(2, 2), 1.0)
