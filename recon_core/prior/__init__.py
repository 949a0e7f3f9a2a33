"""The Product-of-Gaussian-Mixture Diffusion Model image prior.

``load_default_prior(device)`` returns the shipped shearlet prior (a ``DiffusionImagePrior``:
``energy``, exact ``score``, ``denoise``); ``.tabulated()`` gives its fast inference view.
"""

from recon_core.prior.base import DiffusionImagePrior
from recon_core.prior.io import default_weights_path, load_default_prior, load_prior, save_prior
from recon_core.prior.model import PoGMDM, PoGMDMConfig, TabulatedPoGMDM

__all__ = [
    "DiffusionImagePrior",
    "PoGMDM",
    "PoGMDMConfig",
    "TabulatedPoGMDM",
    "default_weights_path",
    "load_default_prior",
    "load_prior",
    "save_prior",
]
