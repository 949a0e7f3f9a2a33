"""Image quality metrics of the benchmark (docs/ALGORITHM.md section 5), on magnitude images.

One scaling rule for every method: the estimate is multiplied by its least-squares scale to
the reference over the object support, ``a = <x, ref> / <x, x>``, then

* PSNR = 10 log10( max(ref)^2 / mean_support (a x - ref)^2 )
* SSIM: 7 x 7 uniform window, k1 = 0.01, k2 = 0.03, data range = max(ref), the SSIM map of the
  whole image averaged over the support
* NMSE = ||a x - ref||^2 / ||ref||^2 over the support.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity


def object_support(reference: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Pixels of the object: reference above ``threshold * max``, holes filled, slightly dilated."""
    support = reference > threshold * reference.max()
    support = ndimage.binary_closing(support, structure=np.ones((5, 5)), iterations=2)
    support = ndimage.binary_fill_holes(support)
    return ndimage.binary_dilation(support, iterations=2)


def least_squares_scale(estimate: np.ndarray, reference: np.ndarray, support: np.ndarray) -> float:
    x, r = estimate[support].astype(np.float64), reference[support].astype(np.float64)
    denominator = float((x * x).sum())
    return float((x * r).sum() / denominator) if denominator > 0 else 0.0


@dataclass(frozen=True)
class Scores:
    psnr: float
    ssim: float
    nmse: float
    scale: float


def score(estimate: np.ndarray, reference: np.ndarray, support: np.ndarray) -> Scores:
    """PSNR (dB), SSIM and NMSE of ``|estimate|`` against ``reference`` on ``support``."""
    magnitude = np.abs(estimate).astype(np.float64)
    reference = reference.astype(np.float64)
    scale = least_squares_scale(magnitude, reference, support)
    scaled = scale * magnitude
    error = (scaled - reference)[support]
    peak = float(reference.max())
    mse = float((error**2).mean())
    psnr = 10.0 * np.log10(peak**2 / mse) if mse > 0 else float("inf")
    _, ssim_map = structural_similarity(
        reference, scaled, win_size=7, data_range=peak, K1=0.01, K2=0.03, gaussian_weights=False, full=True
    )
    nmse = float((error**2).sum() / (reference[support] ** 2).sum())
    return Scores(psnr=float(psnr), ssim=float(ssim_map[support].mean()), nmse=nmse, scale=scale)


def std_error_rank_correlation(
    estimate: np.ndarray, std: np.ndarray, reference: np.ndarray, support: np.ndarray
) -> float:
    """Spearman rank correlation between the std map and the absolute error over the support."""
    scale = least_squares_scale(np.abs(estimate), reference, support)
    error = np.abs(scale * np.abs(estimate) - reference)[support]
    result = spearmanr(std[support], error)
    return float(result.statistic)
