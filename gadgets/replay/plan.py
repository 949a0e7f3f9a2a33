"""What the replay decides before the gadget starts: chain, properties, device, raw file, outputs.

:func:`plan_replay` reads and checks everything the run needs into a :class:`ReplayPlan`;
:func:`check_outputs` checks the output file and the PNG folder can be written. Each raises a
one-line ``ValueError`` naming the file, property or value that is wrong.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from importlib.machinery import PathFinder
from pathlib import Path

import h5py

from gadgets.demo.synthetic import demo_raw_file
from gadgets.encoding import EncodingInfo
from gadgets.replay.chains import ChainSpec, load_chain, override_properties
from gadgets.replay.emulation import check_chain
from gadgets.replay.peers import PROJECT_ROOT, load_target
from gadgets.replay.rawfile import ReconKey, h5_reason, read_raw_summary
from gadgets.settings import GadgetSettings, properties_from_xml, settings_from_properties

log = logging.getLogger("pogmdm.replay")


@dataclass(frozen=True)
class ReplayPlan:
    """Everything decided before the gadget starts (all validation happens in :func:`plan_replay`).

    Attributes:
        raw: the raw file; chain: the chain; configuration_xml: the CONFIG text (with overrides);
        settings: the parsed gadget settings; header_xml: the raw file's XML header;
        encoding: what the header says; expected: reconstructions expected (distinct slices);
        keys: their (slice, contrast, phase, repetition, set), sorted.
    """

    raw: Path
    chain: ChainSpec
    configuration_xml: str
    settings: GadgetSettings
    header_xml: bytes
    encoding: EncodingInfo
    expected: int
    keys: tuple[ReconKey, ...] = ()

    @property
    def expected_series(self) -> dict[int, int]:
        """Images expected per ``image_series_index``."""
        series = {self.settings.image_series: self.expected}
        if self.settings.output_variance:
            series[self.settings.std_series] = self.expected
        return series


def plan_replay(args: argparse.Namespace) -> ReplayPlan:
    """Read and check the chain, its properties, the device and the raw file.

    Raises:
        ValueError: naming the file, property or value that is wrong (unknown chain / property,
            bad device, not an HDF5 file, bad header, no image data).
    """
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout:g}")
    raw = args.raw if args.raw is not None else demo_raw_file()
    if args.raw is None:
        log.info("no input given: reconstructing the shipped demo raw file %s", raw)
    if not raw.exists():
        raise ValueError(f"raw file {raw} not found")
    if not raw.is_file():
        raise ValueError(f"raw file {raw} is not a file")
    chain = load_chain(args.chain)
    if chain.connect_port is not None:
        raise ValueError(f"chain {chain.path} uses <connect>; pogmdm-recon needs an <execute> node")
    check_chain(chain)
    _check_gadget_module(chain, args.connect)
    overrides = dict(_key_value(item) for item in args.set)
    if args.preset:
        overrides["preset"] = args.preset
    source = f"chain {chain.path}" + (" with --set/--preset" if overrides else "")
    try:
        configuration_xml = (
            override_properties(chain.configuration_xml, overrides) if overrides else chain.configuration_xml
        )
        settings = settings_from_properties(properties_from_xml(ElementTree.fromstring(configuration_xml)))
    except (ValueError, ElementTree.ParseError) as error:
        raise ValueError(f"gadget properties of {source}: {error}") from None
    _check_device(settings, source)
    header_xml, encoding, keys = read_raw_summary(raw, args.dataset)
    if not keys:
        raise ValueError(f"raw file {raw} holds no imaging readouts")
    log.info(
        "%s: header version %s, encoded %s, recon %s; %d reconstruction(s) expected; chain %s, preset %s",
        raw,
        encoding.header_version,
        encoding.encoded_matrix,
        encoding.recon_matrix,
        len(keys),
        chain.name,
        settings.preset,
    )
    return ReplayPlan(raw, chain, configuration_xml, settings, header_xml, encoding, len(keys), keys)


def _check_gadget_module(chain: ChainSpec, in_thread: bool) -> None:
    """The chain's Python gadget must be importable where it will run.

    ``--connect`` loads it here; for a child process only its top-level package is looked up
    (on the child's path: this project, ``PYTHONPATH``, the working folder, this interpreter's).
    """
    where = f"chain {chain.path}: the gadget {chain.module}.{chain.target}"
    if in_thread:
        try:
            load_target(chain.module, chain.target)
        except (ImportError, AttributeError, TypeError) as error:
            raise ValueError(f"{where} cannot be loaded: {type(error).__name__}: {error}") from None
        return
    top = chain.module.partition(".")[0]
    paths = [str(PROJECT_ROOT), *os.environ.get("PYTHONPATH", "").split(os.pathsep), os.getcwd(), *sys.path]
    try:
        found = importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        found = False
    if not found and PathFinder.find_spec(top, [p for p in paths if p]) is None:
        raise ValueError(f"{where} cannot be started: no module named {top!r} on the gadget's Python path")


def _check_device(settings: GadgetSettings, source: str) -> None:
    """The ``device`` property must name a device of this machine (the gadget runs here)."""
    from recon_core.recon.device import resolve_device

    try:
        resolve_device(settings.recon.device)
    except ValueError as error:
        raise ValueError(f"gadget property device of {source}: {error}") from None


def check_outputs(output: Path, png: Path | None) -> None:
    """Check, before anything starts, that the output file and the PNG folder can be written.

    Raises:
        ValueError: one line naming the path and what is wrong with it.
    """
    if output.exists():
        if output.is_dir():
            raise ValueError(f"output {output} is a folder; name a file (-o {output / 'out.h5'})")
        if not h5py.is_hdf5(output):
            raise ValueError(f"output {output} exists and is not an HDF5 file; not overwriting it")
        try:
            with h5py.File(output, "a"):
                pass
        except OSError as error:
            raise ValueError(f"output {output} cannot be opened for writing: {h5_reason(error)}") from None
    else:
        folder = output.parent
        if not folder.exists():
            raise ValueError(f"output folder {folder} does not exist")
        if not folder.is_dir():
            raise ValueError(f"output folder {folder} is not a folder")
        _check_writable(folder, "output folder")
    if png is not None:
        if png.exists() and not png.is_dir():
            raise ValueError(f"--png {png} is an existing file, not a folder")
        existing = next(p for p in (png, *png.parents) if p.exists() or p == Path(p.anchor or "."))
        if not existing.is_dir():
            raise ValueError(f"--png {png}: {existing} is a file, not a folder")
        _check_writable(existing, "--png folder")


def _check_writable(folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"{what} {folder} is not writable: {error.strerror or error}") from None


def _key_value(item: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()
