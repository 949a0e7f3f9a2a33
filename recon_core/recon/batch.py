"""Several slices of a series reconstructed in one batch (the MAP method).

    results = reconstruct_batch([slice_1, slice_2, slice_3], load_preset("fast"), prior)
    results[i]   # a ReconResult, or the exception slice i raised (the others are unaffected)

On a GPU one 230 x 180 x 8 slice keeps the device mostly idle: every MAP iteration launches a
few dozen small kernels, so the time per slice is set by launch latency, not by arithmetic.
The slices of a series are independent and usually share their matrix and coil count, so the
MAP solver (:func:`recon_core.recon.map_solver.solve_map`) runs them as the entries of one
batch, exactly as it runs the jackknife's replicates: each entry has its own data and mask
(:class:`recon_core.physics.data_term.JointDataTerm` with ``(B, C, H, W)`` data), its own
noise-tied schedule of prior levels and data weights (a ``(T, B)`` tensor: ``sigma_n`` differs
from slice to slice), its own step sizes and backtracking, its own coil anchor and its own data
refinement damping. The solver and the refinement use the same float32 per-entry arithmetic for
a shared schedule as for a batch (:func:`recon_core.recon.map_solver.per_entry_schedule`), and
the tabulated prior stacks each level's own table (:func:`recon_core.prior.tabulated.stack_tables`),
so on one CPU thread a slice's result in a batch is bit for bit what :func:`reconstruct` returns
for it alone. With more threads (and on a GPU) torch splits the per-entry reductions by the
batch's shape, so they round differently, and the backtracking tests of the non-convex solver
can amplify that on some slices: on an 8-slice Shepp-Logan series through the gadget (2
threads) 6 slices agreed within 5e-4 (relative L2) and 2 within 3.5e-3, as much as a 1e-6
relative perturbation of the input k-space changes those two reconstructed alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from recon_core.physics.data_term import JointDataTerm
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import samples_whole_readouts
from recon_core.prior.base import DiffusionImagePrior
from recon_core.recon.config import ReconConfig
from recon_core.recon.data_consistency import refine_data_consistency
from recon_core.recon.device import resolve_device
from recon_core.recon.preparation import PreparedSlice, load_default_prior, prepare_slice
from recon_core.recon.reconstruction import (
    Progress,
    ReconResult,
    Solution,
    configured_map,
    map_schedule,
    refinement_damping,
    solve_prepared,
    summarise,
)


def reconstruct_batch(
    slices: Sequence[KSpaceSlice],
    config: ReconConfig,
    prior: DiffusionImagePrior | None = None,
    progress: Progress | None = None,
) -> list[ReconResult | Exception]:
    """Reconstruct ``slices``, those that can share a batch in one (see the module docstring).

    Args:
        slices: the slices, in any order; results come back in the same order.
        config: the settings, shared by all slices.
        prior: the image prior; ``None`` loads the shipped default once for all slices.
        progress: ``progress(done, total)`` after every iteration of each joint or single solve.

    Returns:
        One entry per slice: its :class:`ReconResult` (``info["batch_slices"]``: how many slices
        shared its solve; ``timings_s["solve"]`` is that shared solve's time), or the exception
        its preparation or solve raised.
    """
    if prior is None:
        prior = load_default_prior(resolve_device(config.device))
    results: list[ReconResult | Exception | None] = [None] * len(slices)
    prepared: dict[int, _Prepared] = {}
    for index, kspace in enumerate(slices):
        start = time.perf_counter()
        try:
            slice_prepared = prepare_slice(kspace, config, prior)
        except Exception as error:  # this slice's own fault: the others go on
            results[index] = error
            continue
        prepared[index] = _Prepared(slice_prepared, start, time.perf_counter() - start)
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, (slice_prepared, _, _) in prepared.items():
        groups.setdefault(batch_key(slice_prepared, config, index), []).append(index)
    for members in groups.values():
        if len(members) > 1:
            try:
                together = _solve_together([prepared[index] for index in members], config, progress)
            except Exception:  # e.g. out of device memory: each slice alone below
                pass
            else:
                for index, result in zip(members, together, strict=True):
                    results[index] = result
                continue
        for index in members:
            results[index] = _solve_alone(prepared[index], config, progress)
    return [result for result in results if result is not None]  # every slice has one by now


def batch_key(prepared: PreparedSlice, config: ReconConfig, index: int) -> tuple[Any, ...]:
    """Slices with equal keys share a batch; a slice that must be solved alone gets a key of its
    own (its ``index``)."""
    coil_start = prepared.coil_start
    if config.method != "map" or coil_start.extra_maps is not None:
        return ("alone", index)
    return (
        tuple(prepared.data_term.kspace.shape),
        prepared.start_image.dtype,
        coil_start.anchor is None,
        samples_whole_readouts(prepared.data_term.mask),
    )


class _Prepared(NamedTuple):
    """A prepared slice, when its reconstruction started and how long preparing it took (s)."""

    slice: PreparedSlice
    start: float
    setup: float


def _solve_alone(
    prepared: _Prepared, config: ReconConfig, progress: Progress | None
) -> ReconResult | Exception:
    """One slice as :func:`recon_core.recon.reconstruction.reconstruct` solves it."""
    try:
        solve_start = time.perf_counter()
        solution = solve_prepared(prepared.slice, config, progress)
        timings = {"setup": prepared.setup, "solve": time.perf_counter() - solve_start}
        result = summarise(prepared.slice, solution, config, timings, prepared.start)
    except Exception as error:
        return error
    result.info["batch_slices"] = 1
    return result


def _solve_together(
    members: list[_Prepared], config: ReconConfig, progress: Progress | None
) -> list[ReconResult]:
    """The MAP solve and data refinement of compatible slices as one batch."""
    solve_start = time.perf_counter()
    group = [member.slice for member in members]
    first = group[0]
    device = first.device
    data_term = JointDataTerm(
        kspace=torch.stack([prepared.data_term.kspace for prepared in group]),
        mask=torch.stack([prepared.data_term.mask for prepared in group]),
    )
    anchors = [prepared.coil_start.anchor for prepared in group]
    anchor = None if any(a is None for a in anchors) else torch.stack(anchors)  # type: ignore[arg-type]
    schedules = [map_schedule(config, prepared.sigma_n) for prepared in group]
    sigmas = _per_entry([sigmas for sigmas, _ in schedules], device)
    weights = _per_entry([weights for _, weights in schedules], device)
    result = configured_map(
        config,
        first.prior,
        data_term,
        torch.stack([prepared.start_image for prepared in group]),
        torch.stack([prepared.coil_start.coils for prepared in group]),
        sigmas,
        weights,
        anchor,
        progress,
    )
    damping = torch.tensor(
        [refinement_damping(config, prepared.sigma_n) for prepared in group], device=device
    )
    refined = refine_data_consistency(
        data_term, result.image, result.coils, config.data_consistency_steps, damping
    )
    magnitudes = refined.abs()
    solve_time = time.perf_counter() - solve_start
    results = []
    for entry, (member, (entry_sigmas, entry_weights)) in enumerate(zip(members, schedules, strict=True)):
        solution = Solution(
            magnitudes[entry],
            None,
            result.coils[entry : entry + 1],
            entry_sigmas,
            entry_weights,
            config.map_iterations,
            1,
        )
        timings = {"setup": member.setup, "solve": solve_time}
        summary = summarise(member.slice, solution, config, timings, member.start)
        summary.info["batch_slices"] = len(group)
        results.append(summary)
    return results


def _per_entry(schedules: list[list[float]], device: torch.device) -> Tensor:
    """``(T, B)`` float32 from ``B`` schedules of ``T`` values each."""
    return torch.tensor(schedules, dtype=torch.float32, device=device).T.contiguous()
