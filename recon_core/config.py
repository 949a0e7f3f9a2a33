"""Typed reconstruction configuration and the YAML presets that fill it.

``ReconConfig`` is a frozen dataclass; YAML presets (``config/presets/*.yaml``, installed as
the ``pogmdm_config`` package data) and Gadgetron XML properties are parsed only at the edges
and turned into it with :func:`load_preset` / :func:`config_from_mapping`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import yaml

Method = Literal["posterior", "map"]
Initialisation = Literal["zero_filled", "noise"]


@dataclass(frozen=True)
class ReconConfig:
    """Every knob of the joint image / coil reconstruction, with its default.

    Attributes:
        method: ``"posterior"`` (annealed Langevin, B chains: mean and std) or ``"map"``
            (deterministic alternating proximal gradient; no std map).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_chains: B, parallel sampler chains (posterior only).
        num_noise_levels: L, geometric noise levels from ``sigma_max`` to ``sigma_min``.
        steps_per_level: T, Langevin steps per noise level.
        sigma_max, sigma_min: diffusion noise range on the normalised image scale (max ~ 1).
        step_size: eps in ``alpha_k = eps * sigma_k^2 / sigma_min^2``.
        map_iterations: iterations of the MAP mode.
        coil_smoothness: mu of the coil smoothness prior ``(mu/2) sum ||grad c||^2``.
        data_weight_scale: multiplier on the automatic data weight ``1 / sigma_n^2``.
        initialisation: image start: zero-filled RSS or noise.
        seed: random seed (same seed, same result).
    """

    method: Method = "posterior"
    device: str = "auto"
    num_chains: int = 8
    num_noise_levels: int = 40
    steps_per_level: int = 5
    sigma_max: float = 0.4
    sigma_min: float = 0.01
    step_size: float = 0.5
    map_iterations: int = 100
    coil_smoothness: float = 10.0
    data_weight_scale: float = 1.0
    initialisation: Initialisation = "zero_filled"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("posterior", "map"):
            raise ValueError(f"method must be 'posterior' or 'map', got {self.method!r}")
        if self.initialisation not in ("zero_filled", "noise"):
            raise ValueError(f"initialisation must be 'zero_filled' or 'noise', got {self.initialisation!r}")
        for name in ("num_chains", "num_noise_levels", "steps_per_level", "map_iterations"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("sigma_max", "sigma_min", "step_size", "data_weight_scale"):
            if not float(getattr(self, name)) > 0.0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.coil_smoothness < 0.0:
            raise ValueError(f"coil_smoothness must be >= 0, got {self.coil_smoothness!r}")
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min ({self.sigma_min}) must be below sigma_max ({self.sigma_max})")


def _field_types() -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(ReconConfig)}


def config_from_mapping(values: dict[str, Any], base: ReconConfig | None = None) -> ReconConfig:
    """Build a config from ``base`` (default: the defaults) overridden by ``values``.

    Strings are converted to each field's type, so XML property values can be passed as-is.

    Raises:
        ValueError: naming an unknown key or a value that does not convert.
    """
    fields = _field_types()
    base = ReconConfig() if base is None else base
    updates: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in fields:
            raise ValueError(f"unknown reconstruction setting {key!r}; known: {', '.join(sorted(fields))}")
        default = getattr(base, key)
        try:
            if isinstance(default, bool):
                updates[key] = _to_bool(raw)
            elif isinstance(default, int):
                updates[key] = int(raw)
            elif isinstance(default, float):
                updates[key] = float(raw)
            else:
                updates[key] = str(raw)
        except (TypeError, ValueError) as error:
            raise ValueError(f"bad value {raw!r} for {key!r}: {error}") from None
    return dataclasses.replace(base, **updates)


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


def available_presets() -> list[str]:
    """Names of the shipped presets (``config/presets/NAME.yaml``)."""
    folder = resources.files("pogmdm_config") / "presets"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> ReconConfig:
    """The shipped preset ``name`` as a :class:`ReconConfig`.

    Raises:
        ValueError: for an unknown preset name or a malformed preset file.
    """
    names = available_presets()
    if name not in names:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(names)}")
    text = (resources.files("pogmdm_config") / "presets" / f"{name}.yaml").read_text()
    values = yaml.safe_load(text) or {}
    if not isinstance(values, dict):
        raise ValueError(f"preset {name!r} must be a mapping of settings")
    return config_from_mapping(values)
