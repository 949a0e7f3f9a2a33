"""Gadgetron Python gadget targets: raw acquisitions or ReconData in, ISMRMRD images out.

Chain XMLs name them as ``<execute name="gadgets.pogmdm_gadget" target="..." type="python"/>``:

* :func:`reconstruct_acquisitions` takes raw readouts (message 1008) and assembles each slice
  itself (noise prewhitening, readout oversampling, line placement), reconstructing at every
  ACQ_LAST_IN_SLICE and flushing what is left when the stream closes;
* :func:`reconstruct_buffers` takes ReconData (message 1023) from BucketToBufferGadget.

Slices are reconstructed side by side where the ``parallel_slices`` property allows
(:mod:`gadgets.pipeline`; auto: 1 on a GPU, on a CPU the torch threads up to 4, each slice on its
share of them) while the stream is read on; on a GPU (``batch_slices``, auto 8 there) the slices
that arrive while one is reconstructed are solved next as one batch
(:func:`recon_core.recon.batch.reconstruct_batch`). Each slice's images leave as soon as it and
the slices received before it are done, in arrival order and with the image indices of a
one-by-one run. Anything else on the connection is passed on unchanged. A slice that fails is logged on
stderr *and* reported to Gadgetron as an ERROR message (id 8, which Gadgetron's external
channel turns into a failed chain); the gadget then raises :class:`ReconstructionError` when the
stream ends, so ``python -m gadgetron`` exits non-zero. A failure is never silent, and every
ERROR is one line naming the slice (partition, counter or property): a readout outside the
header's encoding limits or repeating a line of a slice already reconstructed is not used; a
slice with too few lines (:func:`gadgets.assembly.check_sampling`), only all-zero readouts, an
unusable noise scan or 3D readouts under a 2D header is not reconstructed. The other slices
still come back.

3D Cartesian encodings (encoded matrix z > 1) are reconstructed in hybrid space: the lines of
one slab are placed by ``kspace_encode_step_2`` relative to the ``kspace_encoding_step_2``
limits' centre, a centred inverse FFT along kz gives the partitions, and each partition of the
recon field of view z is reconstructed as its own 2D slice. It comes back as its own image:
``slice`` = slab x partitions + partition, position moved along the slice direction by the
partition's offset (recon FOV z / recon matrix z per partition), field of view z one partition,
``image_index`` counting every image of the series.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import ismrmrd
from gadgetron.types import ReconData

from gadgets.assembly import SliceAssembler, assemble, check_sampling
from gadgets.buffers import slices_from_recon_data
from gadgets.compat import ERROR, add_writer_first, ctypes_header_warnings_ignored, guard_end_of_stream
from gadgets.encoding import EncodingInfo, encoding_from_header
from gadgets.entry_points import (
    Reconstruct,
    ReconstructBatch,
    load_image_prior,
    load_reconstruct,
    load_reconstruct_batch,
    one_by_one,
)
from gadgets.images import images_for_slice
from gadgets.pipeline import BatchingPipeline, OrderedPipeline, auto_batch, auto_workers, share_threads
from gadgets.settings import GadgetSettings, settings_from_xml
from gadgets.slices import AssembledSlice, RejectedReadoutError, SliceData, SliceDataError, describe
from recon_core.physics.kspace import KSpaceSlice
from recon_core.recon.config import ReconConfig
from recon_core.recon.device import resolve_device

log = logging.getLogger("pogmdm.gadget")

SliceKey = tuple[AssembledSlice, float]  # the slice and when its reconstruction was asked for


class ReconstructionError(RuntimeError):
    """Slices of the stream could not be reconstructed or readouts were not used (each was sent as
    an ERROR)."""


@dataclass(frozen=True)
class GadgetError:
    """An ERROR message (id 8, u64 length, UTF-8 text) for the Gadgetron side."""

    text: str


def write_error(destination: Any, error: GadgetError) -> None:
    """Serialise a :class:`GadgetError` on a gadgetron ``Connection`` socket wrapper."""
    payload = error.text.encode("utf-8")
    destination.write(struct.pack("<H", ERROR) + struct.pack("<Q", len(payload)) + payload)


def reconstruct_acquisitions(connection: Any) -> None:
    """Gadget target for raw acquisitions (ISMRMRD message 1008)."""
    run_gadget(connection, "acquisitions")


def reconstruct_buffers(connection: Any) -> None:
    """Gadget target for ReconData (message 1023) from BucketToBufferGadget."""
    run_gadget(connection, "buffers")


def run_gadget(connection: Any, source: str, reconstruct: Reconstruct | None = None) -> None:
    """Serve one Gadgetron connection.

    Args:
        connection: a ``gadgetron.external.Connection`` (CONFIG and HEADER already read).
        source: ``"acquisitions"`` or ``"buffers"``.
        reconstruct: the reconstruction callable; default
            ``recon_core.recon.reconstruction.reconstruct`` (and, for batches of slices,
            ``recon_core.recon.batch.reconstruct_batch``; a callable given here is called once
            per slice of a batch instead).

    Raises:
        ValueError: for a bad configuration or header (also sent as an ERROR message).
        ReconstructionError: when any slice failed (each also sent as an ERROR message).
    """
    guard_end_of_stream(connection)
    add_writer_first(connection, lambda item: isinstance(item, GadgetError), write_error)
    serialise_sends(connection)
    try:
        settings = _settings(connection)
        encoding = encoding_from_header(connection.header)
        recon = reconstruct if reconstruct is not None else load_reconstruct()
        recon_batch = one_by_one(reconstruct) if reconstruct is not None else load_reconstruct_batch()
        prior = load_image_prior(settings)
    except Exception as error:
        _report(connection, f"pogmdm gadget cannot start: {error}")
        raise
    log.info(
        "pogmdm %s gadget: preset %s, method %s, device %s; encoded %s, recon %s, header version %s",
        source,
        settings.preset,
        settings.recon.method,
        settings.recon.device,
        encoding.encoded_matrix,
        encoding.recon_matrix,
        encoding.header_version,
    )
    session = _Session(connection, settings, encoding, (recon, recon_batch), prior)
    try:
        if source == "acquisitions":
            session.run_acquisitions()
        elif source == "buffers":
            session.run_buffers()
        else:
            raise ValueError(f"unknown gadget source {source!r}")
    finally:
        try:
            session.deliver(wait=True)  # every slice received gets its images or its error
        finally:
            session.pipeline.close()
    session.finish()


def serialise_sends(connection: Any) -> None:
    """One message at a time on the connection: its ``send`` (which the library's own pass-through
    of unfiltered messages calls too, as ``self.send``) takes a lock, so images sent from a
    reconstruction thread never interleave with the main thread's messages."""
    lock = threading.Lock()
    send = connection.send

    def locked_send(item: Any) -> Any:
        with lock:
            return send(item)

    connection.send = locked_send


class _Session:
    """State of one connection: settings, counters and failures."""

    def __init__(
        self,
        connection: Any,
        settings: GadgetSettings,
        encoding: EncodingInfo,
        reconstruct: tuple[Reconstruct, ReconstructBatch],
        prior: Any,
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.encoding = encoding
        self.reconstruct, self.reconstruct_batch = reconstruct
        self.prior = prior
        self.done = 0
        self.failures: list[str] = []
        self.rejected: dict[object, tuple[str, int]] = {}
        device = resolve_device(settings.recon.device)
        self._delivering = threading.Lock()
        batch = settings.batch_slices or (auto_batch(device) if settings.parallel_slices <= 1 else 1)
        self.pipeline: OrderedPipeline[SliceKey, Any] | BatchingPipeline[SliceKey, AssembledSlice, Any]
        if batch > 1:
            log.info("slices solved as one batch: up to %d (those waiting together)", batch)
            self.pipeline = BatchingPipeline(batch, self._reconstructed_batch, on_done=self.deliver)
            return
        workers = settings.parallel_slices or auto_workers(device)
        threads = share_threads(workers) if device.type == "cpu" else None
        log.info("slices reconstructed at once: %d (CPU threads each: %s)", workers, threads)
        self.pipeline = OrderedPipeline(workers, on_done=self.deliver)

    def run_acquisitions(self) -> None:
        # Waveforms (ECG, respiration) are consumed here: nothing downstream writes them.
        self.connection.filter(lambda item: isinstance(item, ismrmrd.Acquisition | ismrmrd.Waveform))
        assembler = SliceAssembler(self.encoding)
        waveforms = 0
        for item in self.connection:
            if isinstance(item, ismrmrd.Waveform):
                waveforms += 1
                continue
            try:
                data = assembler.add(item)
            except RejectedReadoutError as rejection:
                self.reject(rejection)
                continue
            if data is not None:
                self.process(data)
            self.deliver()
        leftovers = assembler.flush()
        if leftovers:
            log.info(
                "stream closed with %d slice(s) without LAST_IN_SLICE: reconstructing them", len(leftovers)
            )
        for data in leftovers:
            self.process(data)
        if assembler.skipped or waveforms:
            log.info("skipped readouts: %s; waveforms dropped: %d", dict(assembler.skipped), waveforms)
        for text, count in self.rejected.values():
            if count > 1:
                self.fail(f"{count - 1} more readout(s) rejected like the first: {text}")

    def run_buffers(self) -> None:
        self.connection.filter(ReconData)
        with ctypes_header_warnings_ignored():
            for recon_data in self.connection:
                self._buffered_item(recon_data)
                self.deliver()

    def _buffered_item(self, recon_data: Any) -> None:
        try:
            slices: Iterable[SliceData] = slices_from_recon_data(recon_data, self.encoding)
        except Exception as error:
            self.fail(f"ReconData could not be read: {type(error).__name__}: {error}", error)
            return
        for data in slices:
            self.process(data)

    def process(self, data: SliceData) -> None:
        """Check, assemble and reconstruct one slice (each partition of a 3D slab on its own)."""
        try:
            check_sampling(data, self.encoding)
            slices = assemble(data, self.encoding)
        except Exception as error:
            self.fail(_reason(describe(data.index), error), error)
            return
        for assembled in slices:
            self.reconstruct_slice(assembled)

    def reconstruct_slice(self, assembled: AssembledSlice) -> None:
        """Start the slice's reconstruction (:attr:`pipeline`); :meth:`deliver` sends its images."""
        key = (assembled, time.perf_counter())
        if isinstance(self.pipeline, BatchingPipeline):
            self.pipeline.submit(key, assembled)
        else:
            self.pipeline.submit(key, lambda: self._reconstructed(assembled))

    def _reconstructed(self, assembled: AssembledSlice) -> Any:
        _log_slice(assembled)
        progress = _ProgressLog(assembled.label)
        return self.reconstruct(assembled.kspace, self.settings.recon, prior=self.prior, progress=progress)

    def _reconstructed_batch(self, batch: list[AssembledSlice]) -> list[Any]:
        """One outcome (images' source or exception) per slice of ``batch``, in its order."""
        for assembled in batch:
            _log_slice(assembled)
        label = batch[0].label if len(batch) == 1 else f"{len(batch)} slices ({batch[0].label}, ...)"
        config: ReconConfig = self.settings.recon
        kspaces = [assembled.kspace for assembled in batch]
        return self.reconstruct_batch(kspaces, config, prior=self.prior, progress=_ProgressLog(label))

    def deliver(self, wait: bool = False) -> None:
        """Send the images (or the ERROR) of every finished slice, in the order the slices came;
        ``wait``: of every slice started, waiting for them. Called by the main thread and, as
        each reconstruction ends, by its worker thread (one at a time; never waiting while it
        holds the lock, see :meth:`OrderedPipeline.finished`)."""
        while True:
            with self._delivering:
                self._deliver()
            if not wait or not len(self.pipeline):
                return
            self.pipeline.wait_for_head()

    def _deliver(self) -> None:
        for outcome in self.pipeline.finished():
            assembled, start = outcome.key
            label = assembled.label
            try:
                if outcome.error is not None:
                    raise outcome.error
                images = images_for_slice(
                    outcome.value, assembled, self.encoding, self.settings, self.done + 1
                )
            except Exception as error:
                self.fail(_reason(label, error), error)
                continue
            for image in images:
                self.connection.send(image)
            self.done += 1
            log.info(
                "%s: %d image(s) sent %.1f s after its last readout",
                label,
                len(images),
                time.perf_counter() - start,
            )

    def reject(self, rejection: RejectedReadoutError) -> None:
        """Report the first readout rejected for a reason; count the others for :meth:`finish`."""
        text, count = self.rejected.get(rejection.key, (str(rejection), 0))
        self.rejected[rejection.key] = (text, count + 1)
        if count == 0:
            self.fail(text)

    def fail(self, text: str, error: BaseException | None = None) -> None:
        text = " ".join(line.strip() for line in text.splitlines() if line.strip())  # one line
        log.error("pogmdm: %s", text, exc_info=error)
        self.failures.append(text)
        _report(self.connection, f"pogmdm: {text}")

    def finish(self) -> None:
        if self.failures:
            summary = f"{len(self.failures)} error(s), {self.done} reconstruction(s) succeeded: " + "; ".join(
                self.failures
            )
            log.error("pogmdm: %s", summary)
            raise ReconstructionError(summary)
        if self.done == 0:
            text = "the stream held no imaging data: no image was reconstructed"
            log.error("pogmdm: %s", text)
            _report(self.connection, f"pogmdm: {text}")
            raise ReconstructionError(text)
        log.info("pogmdm: %d slice(s) reconstructed", self.done)


def _log_slice(assembled: AssembledSlice) -> None:
    kspace: KSpaceSlice = assembled.kspace
    log.info(
        "%s: %d lines (%d calibration only), %d coils, grid %s, acceleration %.2f, prewhitened %s",
        assembled.label,
        assembled.num_lines,
        assembled.num_calibration_lines,
        kspace.num_coils,
        kspace.shape,
        kspace.acceleration,
        kspace.prewhitened,
    )


class _ProgressLog:
    """``progress(step, total)`` callback logging about every tenth of the way."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.last_tenth = -1

    def __call__(self, step: int, total: int) -> None:
        tenth = (10 * step) // max(total, 1)
        if tenth > self.last_tenth:
            self.last_tenth = tenth
            log.info("%s: step %d/%d", self.label, step, total)


def _reason(label: str, error: BaseException) -> str:
    """One line for the ERROR message: a data problem's own message (it names the slice), else
    ``"<label> failed: <type>: <message>"``."""
    if isinstance(error, SliceDataError):
        return str(error)
    return f"{label} failed: {type(error).__name__}: {error}"


def _settings(connection: Any) -> GadgetSettings:
    if connection.config is None and connection.raw_bytes.config.strip():
        raise ValueError(f"the CONFIG message is not valid XML: {connection.raw_bytes.config[:200]!r}")
    return settings_from_xml(connection.config)


def _report(connection: Any, text: str) -> None:
    """Send an ERROR message; a peer that has gone away is logged, not raised."""
    try:
        connection.send(GadgetError(text))
    except OSError as error:
        log.error("could not send the error to the peer (%s): %s", error, text)
