"""The Gadgetron server's side of the ``gadgetron.external`` protocol, for offline replay.

:func:`run_session` does what Gadgetron does for an ``<external>`` node:

* ``execute`` mode: listen on a free local port, start ``python -m gadgetron PORT MODULE TARGET``
  (with this project on ``PYTHONPATH``, as Gadgetron adds ``share/gadgetron/python``) and accept
  its connection;
* ``connect`` mode: run the target in a thread under ``gadgetron.external.listen(port, ...)``
  and connect to it;

then writes CONFIG (the external node's ``<configuration>``), HEADER, the items (ACQUISITION
1008 or RECON_DATA 1023) and CLOSE from a sender thread while reading what comes back: IMAGE
(1022), TEXT (5), ERROR (8) and CLOSE (4). Every wait has a deadline; a gadget that dies, hangs
or reports an error shows up in :class:`SessionOutcome`.
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

from gadgets.peers import ChildPeer, Peer, SessionError, ThreadPeer

log = logging.getLogger("pogmdm.replay")

CONFIG, HEADER, CLOSE, TEXT, ERROR = 2, 3, 4, 5, 8
ACQUISITION, IMAGE, RECON_DATA, WAVEFORM = 1008, 1022, 1023, 1026


@dataclass(frozen=True)
class SessionOutcome:
    """What came back from the gadget.

    Attributes:
        images: the received images, in arrival order.
        errors: ERROR messages from the gadget (or describing how it failed).
        texts: TEXT messages.
        closed: a CLOSE message ended the stream (not a dropped connection).
        exit_code: the child's exit status (``execute`` mode) or 0 / 1 for the thread
            (``connect`` mode).
        passed_through: other items the gadget sent back (acquisitions, waveforms).
        sent: items sent to the gadget.
        seconds: wall time of the session.
    """

    images: tuple[ismrmrd.Image, ...]
    errors: tuple[str, ...]
    texts: tuple[str, ...]
    closed: bool
    exit_code: int
    passed_through: int
    sent: int
    seconds: float

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
) -> SessionOutcome:
    """Replay ``items`` through the gadget ``module.target`` over a real socket.

    Args:
        module, target: the Python gadget, as in ``<execute name= target=>``.
        configuration_xml: the CONFIG message text.
        header_xml: the ISMRMRD XML header, sent unchanged (any header version).
        items: ``ismrmrd.Acquisition`` and / or ``ReconData`` to send, in order.
        mode: ``"execute"`` (child process) or ``"connect"`` (thread + ``listen``).
        timeout: seconds for the whole session.
        env: extra environment variables for the child process.

    Raises:
        SessionError: if no connection was made, the protocol broke or the deadline passed.
    """
    start = time.monotonic()
    deadline = start + timeout
    if mode == "execute":
        peer: Peer = ChildPeer(module, target, env or {}, deadline)
    elif mode == "connect":
        peer = ThreadPeer(module, target, deadline)
    else:
        raise ValueError(f"mode must be 'execute' or 'connect', got {mode!r}")
    try:
        connection = peer.connect()
        with connection:
            sender = _Sender(connection, configuration_xml, header_xml, items, deadline)
            sender.start()
            received = _receive(connection, deadline, peer)
            sender.join(max(1.0, deadline - time.monotonic()))
        exit_code = peer.wait(max(5.0, min(60.0, deadline - time.monotonic())))
    finally:
        peer.stop()
    errors = list(received.errors)
    if sender.error is not None and not received.closed:
        errors.append(f"sending to the gadget failed: {sender.error}")
    if not received.closed:
        errors.append("the gadget closed the connection without a CLOSE message")
    if exit_code != 0:
        errors.append(peer.describe_exit(exit_code))
    return SessionOutcome(
        images=tuple(received.images),
        errors=tuple(errors),
        texts=tuple(received.texts),
        closed=received.closed,
        exit_code=exit_code,
        passed_through=received.passed_through,
        sent=sender.sent,
        seconds=time.monotonic() - start,
    )


@dataclass
class _Received:
    images: list[ismrmrd.Image] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    passed_through: int = 0
    closed: bool = False


class _Reader:
    """Exact reads from a socket with a deadline; a dropped connection raises EOFError."""

    def __init__(self, connection: socket.socket, deadline: float, peer: Peer) -> None:
        self.connection = connection
        self.deadline = deadline
        self.peer = peer

    def read(self, count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            if time.monotonic() > self.deadline:
                raise SessionError("timed out waiting for the gadget's reply")
            try:
                chunk = self.connection.recv(min(count - len(chunks), 1 << 20))
            except TimeoutError:
                if not self.peer.alive():
                    raise EOFError("the gadget process ended") from None
                continue
            if not chunk:
                raise EOFError("connection closed")
            chunks += chunk
        return bytes(chunks)

    def unpack(self, fmt: str) -> int:
        return int(struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0])


def _receive(connection: socket.socket, deadline: float, peer: Peer) -> _Received:
    received = _Received()
    reader = _Reader(connection, deadline, peer)
    try:
        while True:
            message = reader.unpack("<H")
            if message == CLOSE:
                received.closed = True
                return received
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
                raise SessionError(f"the gadget sent message id {message}, which the replay cannot read")
    except EOFError:
        return received


class _Sender(threading.Thread):
    """Writes CONFIG, HEADER, the items and CLOSE; records the first error."""

    def __init__(
        self,
        connection: socket.socket,
        configuration: str,
        header: bytes,
        items: Iterable[Any],
        deadline: float,
    ) -> None:
        super().__init__(name="pogmdm-replay-sender", daemon=True)
        self.connection = connection
        self.deadline = deadline
        self.configuration = configuration.encode("utf-8")
        self.header = header
        self.items = items
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._send(struct.pack("<HI", CONFIG, len(self.configuration)) + self.configuration)
            self._send(struct.pack("<HI", HEADER, len(self.header)) + self.header)
            for item in self.items:
                self._send(encode_item(item))
                self.sent += 1
            self._send(struct.pack("<H", CLOSE))
            log.info("sent %d item(s) and CLOSE", self.sent)
        except Exception as error:  # reported by run_session
            self.error = error
            log.error("replay sender stopped after %d item(s): %s", self.sent, error)

    def _send(self, payload: bytes) -> None:
        """``sendall`` that waits as long as the session may (the socket has a short timeout)."""
        view = memoryview(payload)
        while view:
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
