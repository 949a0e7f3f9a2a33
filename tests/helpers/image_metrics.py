"""Image error measures shared by the reconstruction, ESPIRiT and demo tests."""

from __future__ import annotations

from torch import Tensor


def nmse(estimate: Tensor, reference: Tensor) -> float:
    """NMSE after the least-squares scale of ``estimate`` to ``reference``."""
    scale = (estimate * reference).sum() / (estimate * estimate).sum()
    return float(((scale * estimate - reference) ** 2).sum() / (reference**2).sum())
