"""The Product-of-Gaussian-Mixture Diffusion Model image prior.

``load_default_prior(device)`` returns the default shipped prior, the learned shearlets (a
``DiffusionImagePrior``: ``energy``, exact ``score``, ``denoise``); ``load_prior("conv")`` the shipped
patch-averaged 7 x 7 conv prior; ``.tabulated()`` gives the fast inference view of either.
``load_inference_prior(spec, device)`` loads the prior a reconstruction runs with (the default,
a shipped name, a weights file or ``MODULE:NAME``); ``tweedie_denoise`` is Tweedie's formula.
"""

from recon_core.prior.base import DiffusionImagePrior, tweedie_denoise
from recon_core.prior.io import (
    SHIPPED_PRIORS,
    default_weights_path,
    load_default_prior,
    load_inference_prior,
    load_prior,
    resolve_weights,
    save_prior,
    shipped_weights_path,
)
from recon_core.prior.model import PoGMDM, PoGMDMConfig, TabulatedPoGMDM

__all__ = [
    "SHIPPED_PRIORS",
    "DiffusionImagePrior",
    "PoGMDM",
    "PoGMDMConfig",
    "TabulatedPoGMDM",
    "default_weights_path",
    "load_default_prior",
    "load_inference_prior",
    "load_prior",
    "resolve_weights",
    "save_prior",
    "shipped_weights_path",
    "tweedie_denoise",
]
