"""What the gadget calls into ``recon_core``: the image prior and the reconstruction entry points.

Imported lazily (inside the functions) so that a missing or broken ``recon_core`` gives a clear
ERROR at connection time rather than an import error of the gadget module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gadgets.images import ReconOutput
from gadgets.settings import GadgetSettings
from recon_core.physics.kspace import KSpaceSlice
from recon_core.recon.config import ReconConfig

Reconstruct = Callable[..., ReconOutput]
ReconstructBatch = Callable[..., list[Any]]


def load_image_prior(settings: GadgetSettings) -> Any:
    """The image prior, loaded once per connection on the reconstruction device.

    ``settings.prior`` is a shipped prior's name (``conv``, ``shearlet``), a weights file
    (``.safetensors``; pickles are refused), ``MODULE:NAME`` of a prior class or factory (called
    without arguments), or empty for the shipped default prior; see
    :func:`recon_core.prior.io.load_inference_prior`. PoGMDM weights are used in their fast
    inference view (tabulated potentials), as ``reconstruct`` does for its default prior.

    Raises:
        ValueError: naming the ``prior`` property when ``MODULE:NAME`` gives ``None`` or
            anything else that is not a prior (never a silent fall-back to the default prior).
    """
    from recon_core.prior import load_inference_prior
    from recon_core.recon.device import resolve_device

    return load_inference_prior(
        settings.prior, resolve_device(settings.recon.device), source="prior property"
    )


def load_reconstruct() -> Reconstruct:
    """``recon_core.recon.reconstruction.reconstruct``, with a clear error where it is missing."""
    try:
        from recon_core.recon.reconstruction import reconstruct
    except ImportError as error:
        raise RuntimeError(f"the reconstruction entry point is not available: {error}") from error
    return reconstruct


def load_reconstruct_batch() -> ReconstructBatch:
    """``recon_core.recon.batch.reconstruct_batch``, with a clear error where it is missing."""
    try:
        from recon_core.recon.batch import reconstruct_batch
    except ImportError as error:
        raise RuntimeError(f"the batch reconstruction entry point is not available: {error}") from error
    return reconstruct_batch


def one_by_one(reconstruct: Reconstruct) -> ReconstructBatch:
    """A batch callable that calls ``reconstruct`` on each slice in turn; a slice's exception is
    its outcome, the others go on."""

    def run(slices: list[KSpaceSlice], config: ReconConfig, **options: Any) -> list[Any]:
        outcomes: list[Any] = []
        for kspace in slices:
            try:
                outcomes.append(reconstruct(kspace, config, **options))
            except Exception as error:
                outcomes.append(error)
        return outcomes

    return run
