"""Synthetic test objects: a Shepp-Logan phantom and smooth birdcage-like coil maps.

Used by tests and demos (never by the reconstruction itself).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# (intensity, semi-axis a, semi-axis b, centre x, centre y, rotation in degrees):
# the "modified" Shepp-Logan phantom of Toft, with better contrast than the original.
_MODIFIED_SHEPP_LOGAN = (
    (1.0, 0.69, 0.92, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.0, -0.0184, 0.0),
    (-0.2, 0.11, 0.31, 0.22, 0.0, -18.0),
    (-0.2, 0.16, 0.41, -0.22, 0.0, 18.0),
    (0.1, 0.21, 0.25, 0.0, 0.35, 0.0),
    (0.1, 0.046, 0.046, 0.0, 0.1, 0.0),
    (0.1, 0.046, 0.046, 0.0, -0.1, 0.0),
    (0.1, 0.046, 0.023, -0.08, -0.605, 0.0),
    (0.1, 0.023, 0.023, 0.0, -0.606, 0.0),
    (0.1, 0.023, 0.046, 0.06, -0.605, 0.0),
)


def shepp_logan(height: int, width: int | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Modified Shepp-Logan phantom, ``(height, width)`` real, values in [0, 1]."""
    width = height if width is None else width
    y = torch.linspace(1.0, -1.0, height, dtype=torch.float64)[:, None]
    x = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)[None, :]
    image = torch.zeros(height, width, dtype=torch.float64)
    for intensity, a, b, x0, y0, degrees in _MODIFIED_SHEPP_LOGAN:
        theta = math.radians(degrees)
        xr = (x - x0) * math.cos(theta) + (y - y0) * math.sin(theta)
        yr = -(x - x0) * math.sin(theta) + (y - y0) * math.cos(theta)
        image = image + intensity * ((xr / a) ** 2 + (yr / b) ** 2 <= 1.0)
    return image.clamp(min=0.0).to(dtype)


def birdcage_coil_maps(
    num_coils: int,
    height: int,
    width: int,
    radius: float = 1.5,
    dtype: torch.dtype = torch.complex64,
    rotation: float = 0.0,
    falloff: float = 1.0,
) -> Tensor:
    """Smooth complex coil sensitivities of coils spaced evenly on a ring.

    A simple Biot-Savart-like model: coil ``c`` sits at angle ``2 pi c / C`` on a circle of
    ``radius`` (in units of the half field of view); its sensitivity falls off as the inverse
    distance (to the power ``falloff``: 2 or more for loops close to the object, as a head
    array's) and carries the phase of the direction to the coil. ``rotation`` (radians) turns
    the whole ring.

    Returns:
        ``(num_coils, height, width)`` complex maps.
    """
    y = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)[:, None]
    x = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)[None, :]
    maps = []
    for coil in range(num_coils):
        angle = 2.0 * math.pi * coil / num_coils + rotation
        dx = x - radius * math.cos(angle)
        dy = y - radius * math.sin(angle)
        distance = torch.sqrt(dx**2 + dy**2)
        phase = torch.atan2(dy, dx) + angle
        magnitude = 1.0 / distance if falloff == 1.0 else distance.pow(-falloff)
        maps.append(torch.polar(magnitude, phase))
    stacked = torch.stack(maps)
    stacked = stacked / (stacked.abs() ** 2).sum(0).sqrt().max()
    return stacked.to(dtype)
