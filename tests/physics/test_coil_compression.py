"""SVD coil compression (recon_core/physics/coil_compression.py)."""

from __future__ import annotations

import itertools

import pytest
import torch

from recon_core.physics.coil_compression import compress_slice, compression_matrix
from recon_core.physics.kspace import KSpaceSlice
from recon_core.physics.operators import FFT2Operator
from recon_core.sim.masks import random_lines_mask
from recon_core.sim.phantom import birdcage_coil_maps, shepp_logan

SIZE = 48


def _rank_deficient_slice(coils: int, rank: int, noise_std: float = 0.0) -> KSpaceSlice:
    """k-space of ``coils`` channels that are mixtures of only ``rank`` birdcage coils."""
    generator = torch.Generator().manual_seed(3)
    base = birdcage_coil_maps(rank, SIZE, SIZE) * shepp_logan(SIZE)
    mixing = torch.complex(*torch.randn(2, coils, rank, generator=generator))
    kspace = FFT2Operator().forward(torch.einsum("cr,rhw->chw", mixing, base.to(torch.complex64)))
    if noise_std > 0:
        shape = kspace.shape
        noise = torch.complex(*torch.randn(2, *shape, generator=generator))
        kspace = kspace + noise_std * noise
    mask = random_lines_mask((SIZE, SIZE), 3.0, 0.1, seed=1)
    return KSpaceSlice(kspace=(kspace * mask).to(torch.complex64), mask=mask)


def test_rows_are_orthonormal_so_white_noise_stays_white() -> None:
    data = _rank_deficient_slice(8, 8, noise_std=0.01)
    compression = compression_matrix(data.kspace, data.mask, 5)
    matrix = compression.matrix.to(torch.complex128)
    assert compression.matrix.shape == (5, 8)
    identity = torch.eye(5, dtype=torch.complex128)
    torch.testing.assert_close(matrix @ matrix.conj().T, identity, atol=1e-6, rtol=0)
    assert 0.0 < compression.energy < 1.0


def test_rank_deficient_coils_compress_without_loss() -> None:
    data = _rank_deficient_slice(8, 3)
    compressed, compression = compress_slice(data, 3)
    assert compression is not None and compression.energy == pytest.approx(1.0, abs=1e-5)
    assert compressed.kspace.shape == (3, SIZE, SIZE)
    restored = torch.einsum("vc,vhw->chw", compression.matrix.conj(), compressed.kspace)
    error = (restored - data.kspace).abs().pow(2).sum() / data.kspace.abs().pow(2).sum()
    assert float(error) < 1e-10
    assert bool((compressed.kspace[:, ~data.mask] == 0).all())  # unmeasured samples stay zero


def test_energy_rises_with_the_virtual_coils_and_is_one_for_all() -> None:
    data = _rank_deficient_slice(8, 8, noise_std=0.01)
    energies = [compression_matrix(data.kspace, data.mask, v).energy for v in range(1, 9)]
    assert all(later >= earlier for earlier, later in itertools.pairwise(energies))
    assert energies[-1] == pytest.approx(1.0, abs=1e-9)


def test_zero_or_enough_coils_leave_the_slice_alone() -> None:
    data = _rank_deficient_slice(4, 4)
    for virtual in (0, 4, 6):
        same, compression = compress_slice(data, virtual)
        assert same is data and compression is None


@pytest.mark.parametrize("virtual", [-1])
def test_bad_counts_are_named(virtual: int) -> None:
    data = _rank_deficient_slice(4, 4)
    with pytest.raises(ValueError, match="virtual_coils"):
        compress_slice(data, virtual)
    with pytest.raises(ValueError, match="virtual_coils"):
        compression_matrix(data.kspace, data.mask, 5)
