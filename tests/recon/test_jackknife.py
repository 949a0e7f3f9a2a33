"""The delete-a-group jackknife: its masks, its variance formula and the ``jackknife`` method."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as functional

from recon_core.physics.espirit import calibration_region
from recon_core.recon.jackknife import deletion_masks, jackknife_error
from recon_core.sim.masks import equispaced_lines_mask, poisson_disc_mask


def _check_partition(mask: torch.Tensor, masks: torch.Tensor, eligible: torch.Tensor) -> None:
    """Every replicate is ``mask`` minus one group; the groups are disjoint, of sizes within one
    of each other, and together they are exactly the ``eligible`` samples."""
    left_out = mask.unsqueeze(0) & ~masks
    assert bool((masks <= mask).all())  # nothing added
    assert int(left_out.sum(0).max()) == 1 and torch.equal(left_out.any(0), eligible)
    sizes = left_out.flatten(1).sum(1)
    assert int(sizes.max() - sizes.min()) <= mask.shape[-1]  # within one line (or one sample)


def test_line_masks_keep_the_calibration_block() -> None:
    mask = equispaced_lines_mask((64, 40), 4, 12)
    masks = deletion_masks(mask, 8, seed=0)
    assert masks.shape == (8, 64, 40)
    region = calibration_region(mask)
    assert region is not None
    block = torch.zeros_like(mask)
    block[region.ky_start : region.ky_stop, :] = True
    _check_partition(mask, masks, mask & ~block)
    assert bool(masks[:, region.ky_start : region.ky_stop].all())
    rows = masks.all(dim=-1) | ~masks.any(dim=-1)
    assert bool(rows.all())  # whole lines are left out
    assert torch.equal(masks, deletion_masks(mask, 8, seed=0))
    assert not torch.equal(masks, deletion_masks(mask, 8, seed=1))


def test_two_dimensional_masks_leave_out_samples() -> None:
    mask = poisson_disc_mask((48, 40), 6.0, seed=0)
    masks = deletion_masks(mask, 5, seed=2)
    region = calibration_region(mask)
    block = torch.zeros_like(mask)
    if region is not None:
        block[region.ky_start : region.ky_stop, region.kx_start : region.kx_stop] = True
    _check_partition(mask, masks, mask & ~block)


def test_few_units_fall_back_to_every_acquired_line() -> None:
    full = torch.ones(16, 12, dtype=torch.bool)  # all calibration: every line is eligible
    masks = deletion_masks(full, 4, seed=0)
    _check_partition(full, masks, full)
    two_lines = torch.zeros(16, 12, dtype=torch.bool)
    two_lines[[3, 9]] = True
    assert deletion_masks(two_lines, 8, seed=0).shape[0] == 2  # one group per line at most
    with pytest.raises(ValueError, match="at least 2 groups"):
        deletion_masks(full, 1, seed=0)
    one_line = torch.zeros(16, 12, dtype=torch.bool)
    one_line[8] = True
    with pytest.raises(ValueError, match="at least 2 acquired"):
        deletion_masks(one_line, 4, seed=0)


def test_jackknife_of_a_mean_is_the_standard_error() -> None:
    """For the mean of ``n`` samples, leave-one-out replicates give exactly the squared standard
    error ``s^2 / n`` (``s^2`` the unbiased sample variance): the formula's constant is right."""
    generator = torch.Generator().manual_seed(0)
    samples = torch.randn((7, 10, 9), generator=generator, dtype=torch.float64)
    count = samples.shape[0]
    full = samples.mean(0)
    replicates = (samples.sum(0, keepdim=True) - samples) / (count - 1)
    expected = samples.var(0, unbiased=True) / count
    averaged = functional.avg_pool2d(expected[None, None], 3, 1, 1, count_include_pad=False)[0, 0]
    torch.testing.assert_close(jackknife_error(replicates, full), averaged.sqrt())  # no bias
    assert float(jackknife_error(full.expand(4, -1, -1), full).abs().max()) == 0.0
    with pytest.raises(ValueError, match="replicates"):
        jackknife_error(replicates[:1], full)
    with pytest.raises(ValueError, match="shape"):
        jackknife_error(replicates, full[:5])


def test_jackknife_bias_of_the_plug_in_variance() -> None:
    """The plug-in variance ``(1/n) sum (x - mean)^2`` is biased by ``-sigma^2 / n``; leave-one-out
    replicates estimate that bias exactly as ``-theta / (n - 1)`` (the jackknife's classic
    example), and the map adds its square to the jackknife variance."""
    generator = torch.Generator().manual_seed(1)
    samples = torch.randn((6, 8, 7), generator=generator, dtype=torch.float64)
    count = samples.shape[0]
    theta = samples.var(0, unbiased=False)
    left_out = [torch.cat((samples[:i], samples[i + 1 :])) for i in range(count)]
    replicates = torch.stack([part.var(0, unbiased=False) for part in left_out])
    bias = -theta / (count - 1)
    torch.testing.assert_close((count - 1) * (replicates.mean(0) - theta), bias)
    variance = (count - 1) / count * (replicates - replicates.mean(0)).square().sum(0)
    expected = functional.avg_pool2d((variance + bias.square())[None, None], 3, 1, 1, count_include_pad=False)
    torch.testing.assert_close(jackknife_error(replicates, theta), expected[0, 0].sqrt())


def test_reconstruct_with_the_jackknife(device: torch.device) -> None:
    """End to end on the phantom: the image is the MAP estimate, the std is finite, positive on
    the object; same seed, same result."""
    from smooth_prior import SmoothTVPrior
    from test_reconstruction import NOISE_STD, _config, _phantom_slice

    from recon_core.recon.config import load_preset
    from recon_core.recon.reconstruction import reconstruct

    data, reference = _phantom_slice(NOISE_STD, device)
    config = _config("jackknife", device, map_iterations=30, num_chains=3, data_consistency_steps=50)
    calls: list[tuple[int, int]] = []
    result = reconstruct(data, config, SmoothTVPrior(), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(step, 30) for step in range(1, 31)]
    assert result.info["num_chains"] == 3 and result.std is not None
    single = reconstruct(data, dataclasses.replace(config, method="map"), SmoothTVPrior())
    torch.testing.assert_close(result.image, single.image, rtol=1e-3, atol=1e-3 * float(single.image.max()))
    assert bool(torch.isfinite(result.std).all())
    on_object = reference > 0.05 * reference.max()
    assert bool((result.std[on_object] > 0).all())
    again = reconstruct(data, config, SmoothTVPrior())
    assert torch.equal(result.image, again.image) and torch.equal(result.std, again.std)
    assert load_preset("jackknife").method == "jackknife"


def test_jackknife_with_two_map_sets() -> None:
    """Soft SENSE (image ``(B, S, H, W)``): the replicates start from their own zero-filled data
    in the first set and zero in the second, and the std is one ``(H, W)`` map."""
    from smooth_prior import SmoothTVPrior
    from test_reconstruction import NOISE_STD, SIZE, _config, _phantom_slice

    from recon_core.recon.reconstruction import reconstruct

    device = torch.device("cpu")
    data, reference = _phantom_slice(NOISE_STD, device, mask=equispaced_lines_mask((SIZE, SIZE), 2, 16))
    config = _config(
        "jackknife", device, map_iterations=20, num_chains=3, data_consistency_steps=20, map_sets=2
    )
    result = reconstruct(data, config, SmoothTVPrior())
    assert result.info["map_sets"] == 2 and result.std is not None
    assert result.std.shape == reference.shape and bool(torch.isfinite(result.std).all())
    assert float(result.std.max()) > 0.0
