"""``pogmdm-recon``: reconstruct an ISMRMRD raw file through the Gadgetron gadget, offline.

    pogmdm-recon RAW.h5 -o OUT.h5 [-c CHAIN] [--preset NAME] [--set KEY=VALUE] [--png DIR]
    pogmdm-recon -o demo.h5 --png previews/        # the shipped demo raw file

This process plays the Gadgetron server: it reads the chain XML, starts the Python gadget the
way Gadgetron does (``python -m gadgetron PORT MODULE TARGET``; ``--connect`` serves it with
``gadgetron.external.listen`` in a thread instead), sends CONFIG, HEADER, the acquisitions (or,
for a chain with C++ gadgets before the Python one, what those gadgets would produce: see
:mod:`gadgets.replay.emulation`) and CLOSE over a real socket, and writes the images that come back
in ``gadgetron_ismrmrd_client``'s layout (``/<group>/image_<series>/header|attributes|data``).
Waveforms in the raw file are not sent (the chains drop them). The raw file is only read
(HDF5 mode ``r``): a read-only file works, and several runs may read one file at once.

Everything is checked before the gadget starts (chain, properties, device, raw file, output
paths). Whatever ends the session afterwards (the gadget's error, crash or kill, ``--timeout``,
a bad readout in the raw file, SIGINT / SIGTERM / SIGHUP), every image already received is
written (to a recovery file next to the output where the output cannot be written), and the
last line on stderr says what was written, why the run fell short and which slices were lost.

Exit status: 0 when every expected image arrived and was written; 1 when the gadget reported
an error, died, timed out, the input could not be sent, fewer images than the file has slices
came back, or the output could not be written where asked; 2 for bad arguments (nothing was
started); 128 + the signal number when interrupted (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import h5py
import ismrmrd

from gadgets.replay.chains import DEFAULT_CHAIN, available_chains
from gadgets.replay.emulation import EmulationError, emulate_chain
from gadgets.replay.output import default_group, write_client_layout, write_previews
from gadgets.replay.plan import ReplayPlan, check_outputs, plan_replay
from gadgets.replay.rawfile import RECON_COUNTERS, ReconKey, h5_reason, read_acquisitions
from gadgets.replay.session import InputError, SessionError, SessionOutcome, StopRequest, run_session

log = logging.getLogger("pogmdm.replay")

PROGRAM = "pogmdm-recon"

#: Signals that end a run gracefully: the gadget is stopped, received images are written.
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
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
    """Console entry point; returns the exit status (see the module docstring)."""
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
    signals = _Signals()
    signals.install()
    try:
        return _run(args, signals)
    except _Interrupted as interrupted:
        _final(f"{signals.stop.reason} before the reconstruction started; nothing was written")
        return 128 + interrupted.signum
    except Exception as error:  # a bug: one line, the traceback with -v
        log.debug("internal error", exc_info=True)
        _final(f"internal error: {type(error).__name__}: {error} (run with -v for the traceback)")
        return 1
    finally:
        signals.restore()


def _run(args: argparse.Namespace, signals: _Signals) -> int:
    try:
        plan = plan_replay(args)
        check_outputs(args.output, args.png)
    except (ValueError, OSError, KeyError) as error:
        _final(f"error: {error}")
        return 2
    signals.defer = True  # from here on a signal ends the session; received images are kept
    try:
        outcome = execute(plan, args, signals.stop)
    except SessionError as error:
        if error.outcome is None:
            _final(f"FAILED: {error}")
            return signals.status(1)
        outcome = error.outcome
    return report(plan, outcome, args, signals)


def _final(text: str) -> None:
    """The run's last stderr line (no timestamp, so scripts can read it)."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    print(f"{PROGRAM}: {text}", file=sys.stderr, flush=True)


class _Interrupted(BaseException):
    """A signal before the session (like KeyboardInterrupt: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Signals:
    """SIGINT / SIGTERM / SIGHUP handling.

    Before the session (``defer`` false) a signal aborts at once (:class:`_Interrupted`); from
    the session on it only sets :attr:`stop`, which the session polls: the gadget is stopped,
    received images are written, and the exit status is 128 + the signal number.
    """

    def __init__(self) -> None:
        self.stop = StopRequest()
        self.signum: int | None = None
        self.defer = False
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name in HANDLED_SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self.previous[number] = signal.signal(number, self._handle)

    def restore(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        self.previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return  # already stopping
        self.signum = signum
        self.stop.request(f"interrupted by {signal.Signals(signum).name}")
        if not self.defer:
            raise _Interrupted(signum)

    def status(self, otherwise: int) -> int:
        return 128 + self.signum if self.signum is not None else otherwise


def execute(plan: ReplayPlan, args: argparse.Namespace, stop: StopRequest | None = None) -> SessionOutcome:
    """Run the gadget over the socket and collect what it sends back.

    Raises:
        SessionError: as :func:`gadgets.replay.session.run_session` (its ``outcome`` keeps the images).
    """
    env: dict[str, str] = {}
    if args.threads is not None:
        env = {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        if args.connect:
            import torch

            torch.set_num_threads(args.threads)
    try:
        handle = h5py.File(plan.raw, "r")
    except OSError as error:
        raise SessionError(f"cannot read raw file {plan.raw}: {h5_reason(error)}") from None
    with handle:
        items: Iterable[Any] = read_acquisitions(handle[args.dataset]["data"], plan.raw)
        if plan.chain.upstream:
            names = ", ".join(gadget.classname for gadget in plan.chain.upstream)
            log.info("performing the chain's C++ gadgets before the Python gadget: %s", names)
            items = emulate_chain(items, plan.chain, plan.encoding)
        return run_session(
            plan.chain.module,
            plan.chain.target,
            plan.configuration_xml,
            plan.header_xml,
            _named_failures(items, plan.raw),
            mode="connect" if args.connect else "execute",
            timeout=args.timeout,
            env=env,
            stop=stop,
        )


def _named_failures(items: Iterable[Any], raw: Path) -> Iterator[Any]:
    """``items``, with any failure to produce one turned into an :class:`InputError` naming ``raw``."""
    try:
        yield from items
    except InputError:
        raise
    except EmulationError as error:
        raise InputError(f"bad input {raw} for the chain's {error}") from error
    except Exception as error:
        raise InputError(f"cannot read raw file {raw}: {type(error).__name__}: {error}") from error


def report(
    plan: ReplayPlan,
    outcome: SessionOutcome,
    args: argparse.Namespace,
    signals: _Signals | None = None,
) -> int:
    """Write the images (whatever ended the session), print a summary; the exit status."""
    start = time.perf_counter()
    group = args.group or default_group()
    images = list(outcome.images)
    problems = list(outcome.errors)
    destination: Path | None = None
    write_problem = ""
    previews_problem = ""
    previews = 0
    if images:
        destination, write_problem = save_images(args.output, group, images)
        if args.png is not None:
            try:
                previews = len(write_previews(args.png, images))
                log.info("wrote %d PNG preview(s) to %s", previews, args.png)
            except Exception as error:  # the images are in the HDF5 file; say so, go on
                previews_problem = f"could not write the PNG previews to {args.png}: {error}"
                problems.append(previews_problem)
    per_series = Counter(int(image.image_series_index) for image in images)
    shortfall = []
    for series, expected in plan.expected_series.items():
        if per_series.get(series, 0) < expected:
            shortfall.append(
                f"series {series}: {per_series.get(series, 0)} image(s) received, {expected} expected"
            )
    problems.extend(shortfall)
    for image in images[:1]:
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
        len(images),
        dict(sorted(per_series.items())),
        outcome.seconds,
        time.perf_counter() - start,
    )
    for problem in problems:
        log.error("FAILED: %s", problem)
    total = sum(plan.expected_series.values())
    interrupted = signals is not None and signals.signum is not None
    failed = bool(problems) or bool(write_problem) or interrupted
    if not failed:
        text = f"wrote {_plural(len(images), 'image')} to {destination} (group {group})"
        if args.png is not None:
            text += f" and {_plural(previews, 'PNG preview')} to {args.png}"
        _final(text)
        return 0
    parts = []
    count = f"{len(images)} of {_plural(total, 'image')}"
    if destination is None and images:
        parts.append(f"LOST {count}, received but not written: {write_problem}")
    elif write_problem:
        parts.append(f"wrote {count} to {destination} instead: {write_problem}")
    elif images:
        parts.append(f"wrote {count} to {destination} (group {group})")
    else:
        parts.append(f"no image to write ({count} received)")
    reason = outcome.reason
    if interrupted and signals is not None and not reason:
        reason = signals.stop.reason or "interrupted"
    if not reason and shortfall:
        reason = f"the gadget returned {len(images)} of {_plural(total, 'image')}"
    if reason:
        parts.append(reason)
    lost = describe_lost(plan, images)
    if lost:
        parts.append(lost)
    if previews_problem:
        parts.append(previews_problem)
    _final("; ".join(parts))
    return signals.status(1) if signals is not None else 1


def describe_lost(plan: ReplayPlan, images: Sequence[ismrmrd.Image]) -> str:
    """``slices 1, 2 lost`` (or the counters that differ): expected reconstructions without an image."""
    if not plan.keys:
        return ""
    got: dict[int, set[ReconKey]] = {}
    for image in images:
        key = tuple(int(getattr(image, name)) for name in RECON_COUNTERS)
        got.setdefault(int(image.image_series_index), set()).add(key)  # type: ignore[arg-type]
    lost = [key for key in plan.keys if any(key not in got.get(s, set()) for s in plan.expected_series)]
    if not lost:
        return ""
    varying = [i for i, _ in enumerate(RECON_COUNTERS) if len({key[i] for key in plan.keys}) > 1] or [0]
    shown = lost[:12]
    more = f" and {len(lost) - len(shown)} more" if len(lost) > len(shown) else ""
    if len(varying) == 1:
        name = RECON_COUNTERS[varying[0]]
        values = ", ".join(str(key[varying[0]]) for key in shown)
        return f"{name}{'s' if len(lost) > 1 else ''} {values}{more} lost"
    labels = ", ".join(" ".join(f"{RECON_COUNTERS[i]} {key[i]}" for i in varying) for key in shown)
    return f"lost: {labels}{more}"


def save_images(output: Path, group: str, images: Sequence[ismrmrd.Image]) -> tuple[Path | None, str]:
    """Write ``images`` to ``output``, or to a recovery file if that fails: ``(where, problem)``.

    ``where`` is ``None`` only when no file at all could be written (``problem`` says why).
    """
    try:
        written = write_client_layout(output, group, images)
        log.info("wrote %d image(s) to %s: %s", len(images), output, ", ".join(written))
        return output, ""
    except Exception as error:  # whatever it is, the images must still land somewhere
        reason = f"could not write {output} ({h5_reason(error) if isinstance(error, OSError) else error})"
        log.error("%s", reason)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"{output.stem or 'pogmdm_out'}.recovered-{stamp}{output.suffix or '.h5'}"
    for candidate in (output.parent / name, Path(tempfile.gettempdir()) / name):
        try:
            write_client_layout(candidate, group, images)
        except Exception as error:
            log.error("could not write the recovery file %s either: %s", candidate, error)
            continue
        log.error("the %d received image(s) were written to %s instead", len(images), candidate)
        return candidate, reason
    return None, f"{reason}, nor a recovery file next to it or in {tempfile.gettempdir()}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 3) for v in values)
