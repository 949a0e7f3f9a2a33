"""``pogmdm-recon``: reconstruct an ISMRMRD raw file through the Gadgetron gadget, offline.

    pogmdm-recon RAW.h5 -o OUT.h5 [-c CHAIN] [--preset NAME] [--set KEY=VALUE] [--png DIR]
    pogmdm-recon -o demo.h5 --png previews/        # the shipped demo raw file

This process plays the Gadgetron server: it reads the chain XML, starts the Python gadget the
way Gadgetron does (``python -m gadgetron PORT MODULE TARGET``; ``--connect`` serves it with
``gadgetron.external.listen`` in a thread instead), sends CONFIG, HEADER, the acquisitions (or,
for a chain with C++ gadgets before the Python one, what those gadgets would produce: see
:mod:`gadgets.emulation`) and CLOSE over a real socket, and writes the images that come back
in ``gadgetron_ismrmrd_client``'s layout (``/<group>/image_<series>/header|attributes|data``).
Waveforms in the raw file are not sent (the chains drop them).

Exit status: 0 when every expected image arrived; 1 when the gadget reported an error, died,
timed out or returned fewer images than the file has slices; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import ismrmrd
import numpy as np

from gadgets.assembly import line_role, slice_index
from gadgets.chains import DEFAULT_CHAIN, ChainSpec, available_chains, load_chain, override_properties
from gadgets.demo_data import demo_raw_file
from gadgets.emulation import emulate_chain
from gadgets.encoding import EncodingInfo, encoding_from_header, parse_header
from gadgets.output import default_group, write_client_layout, write_previews
from gadgets.session import SessionError, SessionOutcome, run_session
from gadgets.settings import GadgetSettings, properties_from_xml, settings_from_properties

log = logging.getLogger("pogmdm.replay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pogmdm-recon",
        description="Reconstruct an ISMRMRD raw file through the PoGMDM Gadgetron gadget (offline replay).",
    )
    parser.add_argument("raw", nargs="?", type=Path, help="ISMRMRD raw file (default: the shipped demo)")
    parser.add_argument("-o", "--output", type=Path, default=Path("pogmdm_out.h5"), help="output HDF5 file")
    parser.add_argument(
        "-c", "--chain", default=DEFAULT_CHAIN, help=f"chain name or XML path ({DEFAULT_CHAIN})"
    )
    parser.add_argument("--preset", help="override the chain's preset property")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a gadget property"
    )
    parser.add_argument("--png", type=Path, help="write PNG previews to this folder")
    parser.add_argument("-G", "--group", help="output group (default: date and time, as the client)")
    parser.add_argument("--dataset", default="dataset", help="group of the raw data in the input file")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the whole replay")
    parser.add_argument(
        "--connect", action="store_true", help="serve the gadget with gadgetron.external.listen in a thread"
    )
    parser.add_argument("--threads", type=int, help="CPU threads for the reconstruction (default: torch's)")
    parser.add_argument("--list-chains", action="store_true", help="list the shipped chains and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s pogmdm-recon %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    if args.list_chains:
        print("\n".join(available_chains()))
        return 0
    try:
        plan = plan_replay(args)
    except (ValueError, OSError, KeyError) as error:
        log.error("error: %s", error)
        return 2
    try:
        outcome = execute(plan, args)
    except SessionError as error:
        log.error("FAILED: %s", error)
        return 1
    return report(plan, outcome, args)


@dataclass(frozen=True)
class ReplayPlan:
    """Everything decided before the gadget starts (all validation happens in :func:`plan_replay`).

    Attributes:
        raw: the raw file; chain: the chain; configuration_xml: the CONFIG text (with overrides);
        settings: the parsed gadget settings; header_xml: the raw file's XML header;
        encoding: what the header says; expected: reconstructions expected (distinct slices).
    """

    raw: Path
    chain: ChainSpec
    configuration_xml: str
    settings: GadgetSettings
    header_xml: bytes
    encoding: EncodingInfo
    expected: int

    @property
    def expected_series(self) -> dict[int, int]:
        """Images expected per ``image_series_index``."""
        series = {self.settings.image_series: self.expected}
        if self.settings.output_variance:
            series[self.settings.std_series] = self.expected
        return series


def plan_replay(args: argparse.Namespace) -> ReplayPlan:
    """Read and check the chain, its properties and the raw file.

    Raises:
        ValueError: naming what is wrong (unknown chain / property, bad header, no image data).
    """
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    raw = args.raw if args.raw is not None else demo_raw_file()
    if args.raw is None:
        log.info("no input given: reconstructing the shipped demo raw file %s", raw)
    if not raw.is_file():
        raise ValueError(f"raw file {raw} not found")
    chain = load_chain(args.chain)
    if chain.connect_port is not None:
        raise ValueError(f"chain {chain.path} uses <connect>; pogmdm-recon needs an <execute> node")
    overrides = dict(_key_value(item) for item in args.set)
    if args.preset:
        overrides["preset"] = args.preset
    configuration_xml = (
        override_properties(chain.configuration_xml, overrides) if overrides else (chain.configuration_xml)
    )
    settings = settings_from_properties(properties_from_xml(ElementTree.fromstring(configuration_xml)))
    with h5py.File(raw, "r") as handle:
        if (
            args.dataset not in handle
            or "xml" not in handle[args.dataset]
            or "data" not in handle[args.dataset]
        ):
            raise ValueError(f"{raw} has no ISMRMRD raw data in /{args.dataset} (xml and data)")
        header_xml = bytes(handle[args.dataset]["xml"][0])
        headers = handle[args.dataset]["data"]["head"]
        encoding = encoding_from_header(parse_header(header_xml))
        expected = count_reconstructions(headers, encoding)
    if expected == 0:
        raise ValueError(f"{raw} holds no imaging readouts")
    log.info(
        "%s: header version %s, encoded %s, recon %s; %d reconstruction(s) expected; chain %s, preset %s",
        raw,
        encoding.header_version,
        encoding.encoded_matrix,
        encoding.recon_matrix,
        expected,
        chain.name,
        settings.preset,
    )
    return ReplayPlan(raw, chain, configuration_xml, settings, header_xml, encoding, expected)


def count_reconstructions(headers: np.ndarray, encoding: EncodingInfo) -> int:
    """Distinct (slice, contrast, phase, repetition, set) among the imaging readouts."""
    keys = set()
    for raw_header in headers:
        header = ismrmrd.AcquisitionHeader.from_buffer_copy(np.ascontiguousarray(raw_header).tobytes())
        if line_role(header, encoding) in ("image", "calibration"):
            keys.add(slice_index(header))
    return len(keys)


def execute(plan: ReplayPlan, args: argparse.Namespace) -> SessionOutcome:
    """Run the gadget over the socket and collect what it sends back."""
    env: dict[str, str] = {}
    if args.threads is not None:
        env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        if args.connect:
            import torch

            torch.set_num_threads(args.threads)
    with ismrmrd.Dataset(str(plan.raw), args.dataset, create_if_needed=False) as dataset:
        count = dataset.number_of_acquisitions()
        items: Iterator = (dataset.read_acquisition(i) for i in range(count))
        if plan.chain.upstream:
            names = ", ".join(gadget.classname for gadget in plan.chain.upstream)
            log.info("performing the chain's C++ gadgets before the Python gadget: %s", names)
            items = emulate_chain(items, plan.chain, plan.encoding)
        return run_session(
            plan.chain.module,
            plan.chain.target,
            plan.configuration_xml,
            plan.header_xml,
            items,
            mode="connect" if args.connect else "execute",
            timeout=args.timeout,
            env=env,
        )


def report(plan: ReplayPlan, outcome: SessionOutcome, args: argparse.Namespace) -> int:
    """Write the images, print a summary and decide the exit status."""
    start = time.perf_counter()
    group = args.group or default_group()
    problems = list(outcome.errors)
    if outcome.images:
        written = write_client_layout(args.output, group, outcome.images)
        log.info("wrote %d image(s) to %s: %s", len(outcome.images), args.output, ", ".join(written))
        if args.png is not None:
            previews = write_previews(args.png, outcome.images)
            log.info("wrote %d PNG preview(s) to %s", len(previews), args.png)
    per_series = Counter(int(image.image_series_index) for image in outcome.images)
    for series, expected in plan.expected_series.items():
        if per_series.get(series, 0) < expected:
            problems.append(
                f"series {series}: {per_series.get(series, 0)} image(s) received, {expected} expected"
            )
    for image in outcome.images[:1]:
        log.info(
            "geometry of the first image: matrix %s, FOV %s mm, position %s, read %s, phase %s, slice %s",
            tuple(image.matrix_size),
            _rounded(image.field_of_view),
            _rounded(image.position),
            _rounded(image.read_dir),
            _rounded(image.phase_dir),
            _rounded(image.slice_dir),
        )
    log.info(
        "%d item(s) sent, %d image(s) received (per series %s) in %.1f s; output %.1f s",
        outcome.sent,
        len(outcome.images),
        dict(sorted(per_series.items())),
        outcome.seconds,
        time.perf_counter() - start,
    )
    if problems:
        for problem in problems:
            log.error("FAILED: %s", problem)
        return 1
    return 0


def _key_value(item: str) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in values)


if __name__ == "__main__":
    sys.exit(main())
