"""Resumable training checkpoints: tensors in safetensors, everything else in JSON (no pickle).

``<dir>/checkpoint.safetensors`` holds the model parameters (``model.<name>``) and the
optimiser state tensors (``optimizer.<param index>.<key>``); ``<dir>/checkpoint.json`` holds the
step, the optimiser's param groups, the configurations and the loss history.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS_NAME = "checkpoint.safetensors"
STATE_NAME = "checkpoint.json"


@dataclass(frozen=True)
class CheckpointState:
    """What a checkpoint restores besides tensors: ``step`` (completed steps), ``losses``
    (one per step) and free-form ``info`` (configurations, data summary)."""

    step: int
    losses: list[float]
    info: dict[str, Any]


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: CheckpointState,
) -> None:
    """Write the checkpoint atomically (temporary files renamed into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"model.{name}": value.detach().cpu().contiguous() for name, value in model.state_dict().items()
    }
    optimizer_state = optimizer.state_dict()
    for index, entries in optimizer_state["state"].items():
        for key, value in entries.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = [
        {**group, "betas": list(group["betas"])} if "betas" in group else group
        for group in optimizer_state["param_groups"]
    ]
    document = {"step": state.step, "losses": state.losses, "info": state.info, "param_groups": groups}
    temporary_tensors = directory / (TENSORS_NAME + ".tmp")
    temporary_state = directory / (STATE_NAME + ".tmp")
    save_file(tensors, str(temporary_tensors))
    temporary_state.write_text(json.dumps(document, indent=1))
    os.replace(temporary_tensors, directory / TENSORS_NAME)
    os.replace(temporary_state, directory / STATE_NAME)


def has_checkpoint(directory: Path) -> bool:
    return (directory / TENSORS_NAME).is_file() and (directory / STATE_NAME).is_file()


def load_checkpoint(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> CheckpointState:
    """Restore ``model`` and ``optimizer`` in place; return the rest of the state."""
    tensors = load_file(str(directory / TENSORS_NAME))
    document = json.loads((directory / STATE_NAME).read_text())
    model_state = {
        name[len("model.") :]: value for name, value in tensors.items() if name.startswith("model.")
    }
    model.load_state_dict(model_state)
    optimizer_tensors: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            optimizer_tensors.setdefault(int(index), {})[key] = value
    groups = [
        {**group, "betas": tuple(group["betas"])} if "betas" in group else group
        for group in document["param_groups"]
    ]
    optimizer.load_state_dict({"state": optimizer_tensors, "param_groups": groups})
    return CheckpointState(int(document["step"]), [float(v) for v in document["losses"]], document["info"])
