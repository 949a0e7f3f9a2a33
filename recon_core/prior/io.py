"""Saving and loading PoGMDM priors as safetensors (no pickle), and the shipped priors.

Two priors ship in ``recon_core/prior/weights``: ``shearlet`` (20 learned shearlets, 1,578
parameters; the default, which the reconstruction's presets were tuned with) and ``conv`` (48
orthonormal 7 x 7 filters with a patch-averaged energy, 5,424 parameters; the better denoiser).
Wherever a prior is named (the gadget's ``prior`` setting, the benchmarks), a shipped name or a
weights file path is accepted (:func:`resolve_weights`); :func:`load_inference_prior` is the one
loader of the prior a reconstruction runs with.

A weights file holds the parameter tensors; its metadata holds the architecture
(:class:`PoGMDMConfig` as JSON). A human-readable record of how the weights were made (data,
steps, seed, final loss, date, command line) sits next to it as ``<name>.json``.
"""

from __future__ import annotations

import importlib
import json
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.model import PoGMDM, PoGMDMConfig

SHIPPED_PRIORS: dict[str, str] = {
    "conv": "pogmdm_conv.safetensors",
    "shearlet": "pogmdm_shearlet.safetensors",
}
"""Name -> file of every prior shipped in ``recon_core/prior/weights``."""
DEFAULT_PRIOR = "shearlet"
CONFIG_KEY = "pogmdm_config"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
"""File endings of pickled weights, named as such when refused."""


def shipped_weights_path(name: str) -> Path:
    """Path of the shipped prior ``name`` (a key of :data:`SHIPPED_PRIORS`)."""
    if name not in SHIPPED_PRIORS:
        raise ValueError(f"unknown shipped prior {name!r}; shipped: {', '.join(sorted(SHIPPED_PRIORS))}")
    return Path(str(resources.files("recon_core.prior") / "weights" / SHIPPED_PRIORS[name]))


def default_weights_path() -> Path:
    """Path of the default prior's weights (``recon_core/prior/weights``)."""
    return shipped_weights_path(DEFAULT_PRIOR)


def resolve_weights(spec: Path | str) -> Path:
    """A shipped prior's name (``"conv"``, ``"shearlet"``) or a weights file, as a path."""
    if isinstance(spec, str) and spec in SHIPPED_PRIORS:
        return shipped_weights_path(spec)
    return Path(spec)


def record_path(weights_path: Path | str) -> Path:
    """``<weights>.json``: the record that accompanies a weights file."""
    return Path(weights_path).with_suffix(".json")


def save_prior(model: PoGMDM, path: Path | str, record: dict[str, object] | None = None) -> Path:
    """Write ``model``'s parameters (float32) and config to ``path``; ``record`` (if given) to
    :func:`record_path`. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: value.detach().to("cpu", torch.float32).contiguous()
        for name, value in model.state_dict().items()
    }
    save_file(tensors, str(path), metadata={CONFIG_KEY: json.dumps(model.config.to_dict())})
    if record is not None:
        record_path(path).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


def check_safetensors(path: Path | str) -> None:
    """Refuse anything but a safetensors file before a reader touches it.

    Only safetensors weights are loaded, never pickles: ``torch.save`` / pickle files (``.pt``,
    ``.pth``, ``.pkl``, ``.ckpt``) can run arbitrary code when unpickled. A safetensors file
    starts with its header length (u64, little-endian) followed by a JSON header ``{...}``.

    Raises:
        ValueError: naming the file and what it is instead.
    """
    path = Path(path)
    with path.open("rb") as handle:
        start = handle.read(9)
    if len(start) == 9 and start[8:9] == b"{":
        header_length = int.from_bytes(start[:8], "little")
        if 0 < header_length <= path.stat().st_size - 8:
            return
    if start[:1] == b"\x80" or start[:2] == b"PK" or path.suffix.lower() in PICKLE_SUFFIXES:
        what = "a pickle (torch.save / pickle file)"
    else:
        what = "not a safetensors file"
    raise ValueError(
        f"{path}: {what}; only .safetensors PoGMDM weights are loaded, never pickles (unpickling can run "
        "arbitrary code): save the weights with recon_core.prior.io.save_prior"
    )


def read_config(path: Path | str) -> PoGMDMConfig:
    """The architecture stored in a weights file's metadata.

    Raises:
        ValueError: for a file that is not safetensors (:func:`check_safetensors`) or carries no
            PoGMDM architecture.
    """
    check_safetensors(path)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if CONFIG_KEY not in metadata:
        raise ValueError(f"{path}: not a PoGMDM weights file (no {CONFIG_KEY!r} metadata)")
    return PoGMDMConfig.from_dict(json.loads(metadata[CONFIG_KEY]))


def load_prior(path: Path | str, device: torch.device | str = "cpu") -> PoGMDM:
    """Rebuild the prior stored at ``path`` (or shipped as ``path``, see :func:`resolve_weights`)
    on ``device`` (float32, eval mode, no grad).

    Raises:
        FileNotFoundError: where no file is at ``path``.
        ValueError: for a pickle or any other file that is not PoGMDM safetensors weights.
    """
    path = resolve_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"no PoGMDM weights file at {path}")
    model = PoGMDM(read_config(path))
    model.load_state_dict(load_file(str(path)))
    model.requires_grad_(False)
    return model.to(device).eval()


def load_default_prior(device: torch.device | str = "cpu") -> PoGMDM:
    """The default shipped PoGMDM (``recon_core/prior/weights/pogmdm_shearlet.safetensors``).

    For the sampler's hot loop use ``load_default_prior(device).tabulated()`` (same prior,
    ``psi'`` interpolated from tables; about 100x faster on CPU).
    """
    path = default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"shipped prior weights missing at {path}")
    return load_prior(path, device)


def load_inference_prior(
    spec: str = "", device: torch.device | str = "cpu", source: str = "prior"
) -> DiffusionImagePrior:
    """The image prior a reconstruction runs with, loaded once on ``device``.

    Args:
        spec: empty for the default shipped prior; a shipped prior's name (``conv``,
            ``shearlet``) or a weights file (``.safetensors``; pickles are refused): both
            PoGMDMs in their fast inference view (``.tabulated()``, tabulated potentials); or
            ``MODULE:NAME`` (where no file of that name exists) of a prior class or factory,
            called without arguments, or of a prior object.
        device: where a PoGMDM is put.
        source: how error messages name ``spec`` (the gadget: ``"prior property"``).

    Raises:
        FileNotFoundError: where the weights are missing.
        ValueError: for a file that is not PoGMDM weights, and naming ``source`` when
            ``MODULE:NAME`` gives ``None`` or anything else that is not an image prior (never a
            silent fall-back to the default prior).
    """
    if not spec:
        return load_default_prior(device).tabulated()
    if ":" in spec and not Path(spec).exists():
        module, _, name = spec.partition(":")
        factory = getattr(importlib.import_module(module), name)
        prior = factory() if callable(factory) else factory
        if not isinstance(prior, DiffusionImagePrior):
            raise ValueError(
                f"{source} {spec!r} gave {type(prior).__name__}, not an image prior with "
                "energy(x, sigma) and score(x, sigma)"
            )
        return prior
    return load_prior(spec, device).tabulated()
