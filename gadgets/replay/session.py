"""The Gadgetron server's side of the ``gadgetron.external`` protocol, for offline replay.

:func:`run_session` does what Gadgetron does for an ``<external>`` node:

* ``execute`` mode: listen on a free local port, start ``python -m gadgetron PORT MODULE TARGET``
  (with this project on ``PYTHONPATH``, as Gadgetron adds ``share/gadgetron/python``) and accept
  its connection;
* ``connect`` mode: run the target in a thread under ``gadgetron.external.listen(port, ...)``
  and connect to it;

then writes CONFIG (the external node's ``<configuration>``), HEADER, the items (ACQUISITION
1008 or RECON_DATA 1023) and CLOSE from a sender thread while reading what comes back: IMAGE
(1022), TEXT (5), ERROR (8) and CLOSE (4). Every wait has a deadline.

Nothing received is lost, whatever ends the session:

* the gadget's own failures (ERROR messages, a crash, a signal, a non-zero exit) are returned
  in :class:`SessionOutcome` with every image that arrived before;
* failures on the replay side (the items cannot be produced: :class:`InputError`; the deadline
  passed; a :class:`StopRequest`, e.g. from SIGTERM; a message the replay cannot read; no
  connection) raise :class:`SessionError` whose ``outcome`` holds what arrived before.

When the items fail, the stream is ended without CLOSE (the socket's write side is shut down),
so the gadget stops at its next read instead of waiting for input forever; it gets
:data:`INPUT_FAILURE_GRACE_S` seconds to send what it is finishing, then it is stopped.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import ismrmrd
from gadgetron.types.recon_data import ReconData, write_recon_data

from gadgets.compat import ACQUISITION, CLOSE, CONFIG, ERROR, HEADER, IMAGE, TEXT, WAVEFORM
from gadgets.replay.peers import ChildPeer, Peer, SessionError, StopRequest, ThreadPeer

log = logging.getLogger("pogmdm.replay")


#: Seconds the gadget gets, after the items failed, to send what it is finishing.
INPUT_FAILURE_GRACE_S = 30.0

__all__ = [
    "INPUT_FAILURE_GRACE_S",
    "InputError",
    "SessionError",
    "SessionOutcome",
    "StopRequest",
    "encode_item",
    "run_session",
]


class InputError(ValueError):
    """An item for the gadget could not be produced (a bad raw file, a failed C++ stand-in).

    The message names the file and the acquisition or slice; the session ends early (see the
    module docstring) and :class:`SessionError` carries this message.
    """


@dataclass(frozen=True)
class SessionOutcome:
    """What came back from the gadget.

    Attributes:
        images: the received images, in arrival order.
        errors: ERROR messages from the gadget (or describing how it failed).
        texts: TEXT messages.
        closed: a CLOSE message ended the stream (not a dropped connection).
        exit_code: the child's exit status (``execute`` mode; negative: killed by that signal)
            or 0 / 1 for the thread (``connect`` mode).
        passed_through: other items the gadget sent back (acquisitions, waveforms).
        sent: items sent to the gadget.
        seconds: wall time of the session.
        ended: how the session ended: ``"close"`` (a CLOSE message), ``"disconnect"`` (the
            gadget went away without one), ``"input"`` (the items failed), ``"timeout"``,
            ``"stopped"`` (a :class:`StopRequest`), ``"protocol"`` (an unreadable message) or
            ``"connect"`` (no connection was made).
        reason: one line saying what went wrong first (empty when nothing did).
    """

    images: tuple[ismrmrd.Image, ...]
    errors: tuple[str, ...]
    texts: tuple[str, ...]
    closed: bool
    exit_code: int
    passed_through: int
    sent: int
    seconds: float
    ended: str = "close"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.closed and self.exit_code == 0 and not self.errors


def run_session(
    module: str,
    target: str,
    configuration_xml: str,
    header_xml: bytes,
    items: Iterable[Any],
    mode: str = "execute",
    timeout: float = 3600.0,
    env: dict[str, str] | None = None,
    stop: StopRequest | None = None,
) -> SessionOutcome:
    """Replay ``items`` through the gadget ``module.target`` over a real socket.

    Args:
        module, target: the Python gadget, as in ``<execute name= target=>``.
        configuration_xml: the CONFIG message text.
        header_xml: the ISMRMRD XML header, sent unchanged (any header version).
        items: ``ismrmrd.Acquisition`` and / or ``ReconData`` to send, in order; an exception
            while producing one (preferably :class:`InputError`, naming the file) ends the
            session early.
        mode: ``"execute"`` (child process) or ``"connect"`` (thread + ``listen``).
        timeout: seconds for the whole session.
        env: extra environment variables for the child process.
        stop: polled while waiting; once set, the session ends with what arrived so far.

    Returns:
        The outcome when the gadget ended the session (CLOSE, disconnect, crash).

    Raises:
        SessionError: when the replay side ended it (no connection, the items failed, the
            deadline passed, a stop request, an unreadable message); its ``outcome`` holds
            every image received before.
    """
    start = time.monotonic()
    deadline = start + timeout
    stop = stop if stop is not None else StopRequest()
    if mode == "execute":
        peer: Peer = ChildPeer(module, target, env or {}, deadline, stop)
    elif mode == "connect":
        peer = ThreadPeer(module, target, deadline, stop)
    else:
        raise ValueError(f"mode must be 'execute' or 'connect', got {mode!r}")
    received = _Received()
    sender: _Sender | None = None
    try:
        try:
            connection = peer.connect()
        except SessionError as error:
            received.ended, received.reason = "connect", str(error)
        else:
            with connection:
                sender = _Sender(connection, configuration_xml, header_xml, items, deadline, stop)
                sender.start()
                _receive(_Reader(connection, deadline, timeout, peer, stop, sender), received)
                sender.abort = True
            # The socket is closed: a sender blocked in send() fails at once.
            sender.join(5.0)
            if received.ended in ("close", "disconnect"):
                exit_code = peer.wait(max(5.0, min(60.0, deadline - time.monotonic())))
            else:
                peer.stop()
                exit_code = peer.wait(10.0)
    finally:
        peer.stop()
    if received.ended == "connect":
        outcome = _outcome(received, None, -1, start)
        raise SessionError(received.reason, outcome)
    outcome = _outcome(received, sender, exit_code, start, peer)
    if outcome.ended in ("input", "timeout", "stopped", "protocol"):
        raise SessionError(outcome.reason, outcome)
    return outcome


def _outcome(
    received: _Received,
    sender: _Sender | None,
    exit_code: int,
    start: float,
    peer: Peer | None = None,
) -> SessionOutcome:
    """The outcome, its error list and the one-line reason (the first cause, not its echoes)."""
    count = len(received.images)
    after = f"after image {count}" if count else "before any image arrived"
    errors = list(received.errors)
    ended, reason = received.ended, received.reason
    input_error = sender.input_error if sender is not None else None
    if sender is not None and input_error is not None:
        ended = "input"
        reason = str(input_error)
        if not isinstance(input_error, InputError):
            reason = (
                f"the replay could not produce item {sender.sent + 1} for the gadget: "
                f"{type(input_error).__name__}: {input_error}"
            )
        errors.insert(0, reason)
    elif ended in ("timeout", "stopped", "protocol"):
        reason = f"{reason} {after}"
        errors.insert(0, reason)
    elif ended != "connect":
        if sender is not None and sender.error is not None and not received.closed:
            errors.append(f"sending to the gadget failed: {sender.error}")
        if not received.closed:
            errors.append(f"the gadget closed the connection without a CLOSE message {after}")
        died = exit_code != 0 and peer is not None
        if died:
            errors.append(f"{peer.describe_exit(exit_code)} {after}")
        if received.errors:
            more = len(received.errors) - 1
            reason = f"the gadget reported: {received.errors[0]}" + (f" (and {more} more)" if more else "")
        elif died:
            reason = errors[-1]
        elif errors:
            reason = errors[0]
    else:  # no connection
        errors.insert(0, reason)
    return SessionOutcome(
        images=tuple(received.images),
        errors=tuple(errors),
        texts=tuple(received.texts),
        closed=received.closed,
        exit_code=exit_code,
        passed_through=received.passed_through,
        sent=sender.sent if sender is not None else 0,
        seconds=time.monotonic() - start,
        ended=ended,
        reason=reason,
    )


@dataclass
class _Received:
    images: list[ismrmrd.Image] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    passed_through: int = 0
    closed: bool = False
    ended: str = "close"
    reason: str = ""


class _StopReadingError(Exception):
    """The receiving loop must end now (``kind``: timeout, stopped, protocol, disconnect)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class _Reader:
    """Exact reads from a socket; every wait checks the deadline, the gadget and a stop request."""

    def __init__(
        self,
        connection: socket.socket,
        deadline: float,
        timeout: float,
        peer: Peer,
        stop: StopRequest,
        sender: _Sender,
    ) -> None:
        self.connection = connection
        self.deadline = deadline
        self.timeout = timeout
        self.peer = peer
        self.stop = stop
        self.sender = sender

    def check(self) -> None:
        """Raise :class:`_StopReadingError` when waiting on must stop."""
        if self.stop:
            raise _StopReadingError("stopped", self.stop.reason or "stopped")
        now = time.monotonic()
        if now > self.deadline:
            raise _StopReadingError("timeout", f"timed out after {self.timeout:g} s waiting for the gadget")
        failed_at = self.sender.input_failed_at
        if failed_at is not None and now > failed_at + INPUT_FAILURE_GRACE_S:
            raise _StopReadingError(
                "input", f"the gadget did not end within {INPUT_FAILURE_GRACE_S:g} s of the input failing"
            )

    def read(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            self.check()
            try:
                chunk = self.connection.recv(min(count - len(chunks), 1 << 20))
            except TimeoutError:
                if not self.peer.alive():
                    raise _StopReadingError("disconnect", "the gadget ended") from None
                continue
            except OSError as error:  # ConnectionResetError when the gadget is killed
                raise _StopReadingError("disconnect", f"the connection failed: {error}") from None
            if not chunk:
                raise _StopReadingError("disconnect", "the gadget closed the connection")
            chunks += chunk
        return bytes(chunks)

    def unpack(self, fmt: str) -> int:
        return int(struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0])


def _receive(reader: _Reader, received: _Received) -> None:
    """Read messages into ``received`` until CLOSE or anything else ends the session."""
    try:
        while True:
            message = reader.unpack("<H")
            if message == CLOSE:
                received.closed = True
                received.ended = "close"
                return
            if message == IMAGE:
                image = ismrmrd.Image.deserialize_from(reader.read)
                received.images.append(image)
                log.info(
                    "received image series %d index %d (%d x %d)",
                    image.image_series_index,
                    image.image_index,
                    *image.matrix_size[:2],
                )
            elif message == ERROR:
                text = reader.read(reader.unpack("<Q")).decode("utf-8", "replace")
                log.error("gadget reported: %s", text)
                received.errors.append(text)
            elif message == TEXT:
                text = reader.read(reader.unpack("<I")).decode("utf-8", "replace")
                log.info("gadget says: %s", text)
                received.texts.append(text)
            elif message == ACQUISITION:
                ismrmrd.Acquisition.deserialize_from(reader.read)
                received.passed_through += 1
            elif message == WAVEFORM:
                ismrmrd.Waveform.deserialize_from(reader.read)
                received.passed_through += 1
            else:
                raise _StopReadingError(
                    "protocol", f"the gadget sent message id {message}, which the replay cannot read,"
                )
    except _StopReadingError as end:
        received.ended, received.reason = end.kind, end.reason
        if end.kind != "disconnect":
            log.error("ending the session: %s", end.reason)


class _Sender(threading.Thread):
    """Writes CONFIG, HEADER, the items and CLOSE.

    When producing an item fails (``input_error``), the stream is ended without CLOSE: the
    write side is shut down, so the gadget sees the end at its next read. A failure to send
    (the gadget went away) is recorded in ``error``; setting ``abort`` stops it.
    """

    def __init__(
        self,
        connection: socket.socket,
        configuration: str,
        header: bytes,
        items: Iterable[Any],
        deadline: float,
        stop: StopRequest,
    ) -> None:
        super().__init__(name="pogmdm-replay-sender", daemon=True)
        self.connection = connection
        self.deadline = deadline
        self.stop = stop
        self.configuration = configuration.encode("utf-8")
        self.header = header
        self.items = items
        self.sent = 0
        self.abort = False
        self.error: BaseException | None = None
        self.input_error: BaseException | None = None
        self.input_failed_at: float | None = None

    def run(self) -> None:
        try:
            self._send(struct.pack("<HI", CONFIG, len(self.configuration)) + self.configuration)
            self._send(struct.pack("<HI", HEADER, len(self.header)) + self.header)
            iterator = iter(self.items)
            while not self.abort:
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception as error:  # the input's fault, reported by run_session
                    self._input_failed(error)
                    return
                try:
                    payload = encode_item(item)
                except Exception as error:
                    self._input_failed(error)
                    return
                self._send(payload)
                self.sent += 1
            if self.abort:
                return
            self._send(struct.pack("<H", CLOSE))
            log.info("sent %d item(s) and CLOSE", self.sent)
        except Exception as error:  # reported by run_session
            self.error = error
            if not self.abort:
                log.info("the replay sender stopped after %d item(s): %s", self.sent, error)

    def _input_failed(self, error: BaseException) -> None:
        self.input_error = error
        self.input_failed_at = time.monotonic()
        log.error("the input failed after %d item(s) were sent: %s", self.sent, error)
        log.info(
            "ending the stream without CLOSE; the gadget has %g s to send what it is finishing",
            INPUT_FAILURE_GRACE_S,
        )
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError as shutdown_error:
            log.debug("shutting down the socket failed: %s", shutdown_error)

    def _send(self, payload: bytes) -> None:
        """``sendall`` that waits as long as the session may (the socket has a short timeout)."""
        view = memoryview(payload)
        while view:
            if self.abort or self.stop:
                raise SessionError("the session ended")
            if time.monotonic() > self.deadline:
                raise SessionError("timed out sending to the gadget")
            try:
                count = self.connection.send(view)
            except TimeoutError:
                continue
            view = view[count:]


def encode_item(item: Any) -> bytes:
    """The wire bytes (message id + payload) of an acquisition or a ReconData."""
    if isinstance(item, ismrmrd.Acquisition):
        return struct.pack("<H", ACQUISITION) + item.to_bytes()
    if isinstance(item, ReconData):
        buffer = io.BytesIO()
        write_recon_data(buffer, item)
        return buffer.getvalue()
    raise TypeError(f"cannot send a {type(item).__name__} to the gadget")
