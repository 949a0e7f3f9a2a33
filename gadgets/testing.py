"""Helpers shared by the gadget, wire-protocol and replay tests (not used by the product).

* :func:`prior_weights_for_tests`: a weights file for the image prior: the shipped one where it
  exists, else a freshly initialised (untrained) PoGMDM written once to ``folder``, so the
  end-to-end tests run before trained weights land;
* :func:`shepp_logan_raw`: a raw file from Debian's ``ismrmrd_generate_cartesian_shepp_logan``
  (ISMRMRD 1.8: header ``<version>8</version>``, 2x readout oversampling, noise readout).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

GENERATOR = "ismrmrd_generate_cartesian_shepp_logan"


def prior_weights_for_tests(folder: Path) -> Path:
    """The shipped prior weights, or an untrained prior saved to ``folder``."""
    from recon_core.prior.io import default_weights_path, save_prior
    from recon_core.prior.model import PoGMDM

    shipped = default_weights_path()
    if shipped.is_file():
        return shipped
    path = Path(folder) / "untrained_pogmdm.safetensors"
    if not path.is_file():
        save_prior(PoGMDM(), path)
    return path


def generator_available() -> bool:
    """Whether ``ismrmrd_generate_cartesian_shepp_logan`` is on PATH."""
    return shutil.which(GENERATOR) is not None


def shepp_logan_raw(
    path: Path,
    matrix: int = 64,
    coils: int = 4,
    acceleration: int = 1,
    repetitions: int = 1,
    noise_readout: bool = True,
    noise_level: float = 0.05,
    calibration_width: int = 0,
) -> Path:
    """Run the Debian generator (``-m -c -a -w -r [-C] -n``) and return ``path``."""
    command = [
        GENERATOR,
        "-m", str(matrix),
        "-c", str(coils),
        "-a", str(acceleration),
        "-w", str(calibration_width),
        "-r", str(repetitions),
        "-n", str(noise_level),
        "-o", str(path),
    ]  # fmt: skip
    if noise_readout:
        command.append("-C")
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return path
