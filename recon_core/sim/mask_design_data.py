"""Training examples for sampling-pattern design: the prior's training images on the target
grid, seen through simulated smooth coils.

Images come from :mod:`recon_core.training.data` (the MR slices shipped inside public wheels,
or the user's folder), never from benchmark data. Each image is placed into the ``(H, W)``
grid at its own pixel size (shrunk only where it would not fit, zero-padded), in its own
orientation and transposed, so that the pattern does not learn one anatomy's orientation.
Every draw flips the image at random, gives it a smooth random phase, and turns a ring of
``C`` birdcage-like coils (:func:`~recon_core.sim.phantom.birdcage_coil_maps`) by a random angle;
the coils are RSS-normalised (``sum_c |s_c|^2 = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from recon_core.physics.data_term import normalised_coils
from recon_core.sim.phantom import birdcage_coil_maps
from recon_core.training.data import ImageSource


def fit_to_grid(image: np.ndarray, shape: tuple[int, int], fill: float = 0.9) -> Tensor:
    """``image`` ``(h, w)`` zero-padded into ``shape`` ``(H, W)`` at its own pixel size, or, where
    it is larger than ``fill`` of the grid, first shrunk to fit (bilinear with antialiasing,
    aspect kept); never enlarged, so that its fine detail keeps its spatial frequencies. Scaled
    to max 1. Returns ``(H, W)`` float32."""
    height, width = shape
    source = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    zoom = min(1.0, fill * min(height / source.shape[0], width / source.shape[1]))
    new_height = max(1, min(height, round(source.shape[0] * zoom)))
    new_width = max(1, min(width, round(source.shape[1] * zoom)))
    resized = torch.nn.functional.interpolate(
        source[None, None], size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
    )[0, 0].clamp_min(0.0)
    out = torch.zeros(height, width)
    top, left = (height - new_height) // 2, (width - new_width) // 2
    out[top : top + new_height, left : left + new_width] = resized
    peak = out.max()
    return out / peak if peak > 0 else out


class TrainingExamples:
    """Draws ``(images (B, H, W), coils (B, C, H, W))`` for :func:`~recon_core.sim.mask_design.design_mask`.

    Args:
        sources: training images (any sizes).
        shape: ``(H, W)`` target grid.
        num_coils: coils of the simulated ring.
        fill: fraction of the field of view the object fills.
        phase: peak of a smooth random object phase (radians; 0: real images). MR images are
            complex: without a phase, k-space is conjugate-symmetric and a pattern learns to
            measure one half only.
    """

    def __init__(
        self,
        sources: Sequence[ImageSource],
        shape: tuple[int, int],
        num_coils: int,
        fill: float = 0.9,
        phase: float = math.pi,
    ):
        if num_coils < 1:
            raise ValueError(f"the number of coils must be >= 1, got {num_coils}")
        images = [image for source in sources for image in source.images]
        if not images:
            raise ValueError("no training images")
        fitted = []
        for image in images:
            fitted.append(fit_to_grid(image, shape, fill))
            fitted.append(fit_to_grid(np.ascontiguousarray(image.T), shape, fill))
        self.images = torch.stack(fitted)
        self.shape = shape
        self.num_coils = num_coils
        self.phase = phase

    def object_phase(self, generator: torch.Generator) -> Tensor:
        """``(H, W)`` smooth random phase (radians): a 4 x 4 Gaussian field, bicubic-upsampled,
        peak magnitude ``phase``."""
        coarse = torch.randn(1, 1, 4, 4, generator=generator)
        field = torch.nn.functional.interpolate(coarse, size=self.shape, mode="bicubic", align_corners=True)[
            0, 0
        ]
        return self.phase * field / field.abs().max().clamp_min(1e-12)

    def coils(self, rotation: float) -> Tensor:
        """``(C, H, W)`` RSS-normalised ring coils turned by ``rotation`` radians."""
        maps = birdcage_coil_maps(self.num_coils, *self.shape, rotation=rotation)
        return normalised_coils(maps)

    def __call__(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        indices = torch.randint(self.images.shape[0], (batch,), generator=generator)
        flips = torch.rand(batch, 2, generator=generator) < 0.5
        rotations = torch.rand(batch, generator=generator) * 2.0 * math.pi
        images, coils = [], []
        for index, (flip_rows, flip_cols), rotation in zip(
            indices.tolist(), flips.tolist(), rotations.tolist(), strict=True
        ):
            image = self.images[index]
            if flip_rows:
                image = image.flip(0)
            if flip_cols:
                image = image.flip(1)
            if self.phase > 0:
                image = torch.polar(image, self.object_phase(generator))
            images.append(image)
            coils.append(self.coils(rotation))
        return torch.stack(images), torch.stack(coils)
