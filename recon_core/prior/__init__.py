"""The Product-of-Gaussian-Mixture Diffusion Model image prior.

``load_default_prior(device)`` returns the default shipped prior, the learned shearlets (a
``DiffusionImagePrior``: ``energy``, exact ``score``, ``denoise``); ``load_prior("conv")`` the shipped
patch-averaged 7 x 7 conv prior; ``.tabulated()`` gives the fast inference view of either.
"""

from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.io import (
    SHIPPED_PRIORS,
    default_weights_path,
    load_default_prior,
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
    "load_prior",
    "resolve_weights",
    "save_prior",
    "shipped_weights_path",
]
