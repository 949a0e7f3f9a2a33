"""Helpers shared by the gadget, wire-protocol and replay tests (test-only, not installed).

* :func:`prior_weights_for_tests`: a weights file for the image prior: the shipped one where it
  exists, else a freshly initialised (untrained) PoGMDM written once to ``folder``, so the
  end-to-end tests run before trained weights land;
* :func:`shepp_logan_raw`: a raw file from Debian's ``ismrmrd_generate_cartesian_shepp_logan``
  (ISMRMRD 1.8: header ``<version>8</version>``, 2x readout oversampling, noise readout);
* :func:`read_raw` and :func:`replay_acquisitions`: a raw file's header and acquisitions, and
  a (possibly edited) acquisition stream sent through a chain's gadget over a socket, with the
  chain's C++ gadgets emulated, as Gadgetron would.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import ismrmrd

if TYPE_CHECKING:
    from gadgets.replay.session import SessionOutcome

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


def read_raw(path: Path) -> tuple[bytes, list[ismrmrd.Acquisition]]:
    """The XML header and every acquisition of the raw file ``path`` (``/dataset``)."""
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=False) as dataset:
        header = bytes(dataset.read_xml_header())
        acquisitions = [dataset.read_acquisition(i) for i in range(dataset.number_of_acquisitions())]
    return header, acquisitions


def replay_acquisitions(
    header: bytes,
    acquisitions: Sequence[ismrmrd.Acquisition],
    chain: str = "pogmdm",
    mode: str = "execute",
    properties: Mapping[str, str | None] | None = None,
    module: str | None = None,
    target: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> SessionOutcome:
    """Send ``acquisitions`` through ``chain``'s gadget as Gadgetron would (C++ gadgets emulated).

    ``properties`` override the chain's ``<configuration>`` (``None`` removes nothing, it is
    skipped); ``module`` / ``target`` replace the chain's Python gadget.
    """
    from gadgets.encoding import encoding_from_header, parse_header
    from gadgets.replay.chains import load_chain, override_properties
    from gadgets.replay.emulation import emulate_chain
    from gadgets.replay.session import run_session

    spec = load_chain(chain)
    values = {key: value for key, value in (properties or {}).items() if value is not None}
    encoding = encoding_from_header(parse_header(header))
    items = list(emulate_chain(iter(acquisitions), spec, encoding)) if spec.upstream else list(acquisitions)
    return run_session(
        module or spec.module,
        target or spec.target,
        override_properties(spec.configuration_xml, values),
        bytes(header),
        items,
        mode=mode,
        timeout=timeout,
        env=env,
    )
