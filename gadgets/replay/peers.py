"""The gadget side of a replay session: a child process or a thread, started, watched, stopped.

* :class:`ChildPeer`: ``python -m gadgetron PORT MODULE TARGET`` connecting back to a listening
  socket, as Gadgetron's ``<execute>`` node does (this project is put on ``PYTHONPATH`` the
  way Gadgetron adds ``share/gadgetron/python``);
* :class:`ThreadPeer`: the target served by ``gadgetron.external.listen`` in a thread, as for a
  ``<connect>`` node.
"""

from __future__ import annotations

import abc
import ctypes
import importlib
import inspect
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gadgetron.external import listen

if TYPE_CHECKING:
    from gadgets.replay.session import SessionOutcome

log = logging.getLogger("pogmdm.replay")

PROJECT_ROOT = Path(__file__).resolve().parents[2]

#: Seconds between checks of a stop request while waiting (accept, process exit).
POLL_S = 0.25


class SessionError(RuntimeError):
    """The session could not run to its end (no connection, bad input, protocol error, timeout,
    a stop request).

    Attributes:
        outcome: what the gadget had sent before the session ended (images included), or
            ``None`` where the session never got that far.
    """

    def __init__(self, message: str, outcome: SessionOutcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


class StopRequest:
    """A request to end the session early (set by a signal handler; polled, never waited on).

    A plain attribute rather than a ``threading.Event``: a signal handler runs in the main
    thread between bytecodes and must not take a lock that the interrupted code may hold.
    """

    def __init__(self) -> None:
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def __bool__(self) -> bool:
        return self.reason is not None


class Peer(abc.ABC):
    """How the gadget side is started, watched and stopped."""

    @abc.abstractmethod
    def connect(self) -> socket.socket:
        """Start the gadget and return the connected socket."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """Whether the gadget is still running."""

    @abc.abstractmethod
    def wait(self, seconds: float) -> int:
        """Wait for the gadget to end; its exit status (0 = success)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """End the gadget if it still runs."""

    @abc.abstractmethod
    def describe_exit(self, code: int) -> str:
        """A message for a non-zero exit status."""


class ChildPeer(Peer):
    """``python -m gadgetron PORT MODULE TARGET`` connecting back to a listening socket."""

    def __init__(
        self,
        module: str,
        target: str,
        env: dict[str, str],
        deadline: float,
        stop: StopRequest | None = None,
    ) -> None:
        self.module, self.target, self.env, self.deadline = module, target, env, deadline
        self.stop_request = stop if stop is not None else StopRequest()
        self.process: subprocess.Popen[bytes] | None = None

    def connect(self) -> socket.socket:
        with socket.create_server(("127.0.0.1", 0)) as server:
            port = server.getsockname()[1]
            environment = dict(os.environ)
            paths = [str(PROJECT_ROOT), environment.get("PYTHONPATH", "")]
            environment["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
            environment.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", "INFO")
            environment.update(self.env)
            command = [sys.executable, "-m", "gadgetron", str(port), self.module, self.target]
            # Its own session: a terminal's Ctrl-C reaches only pogmdm-recon, which stops the
            # child itself after keeping what arrived; on Linux the child also ends when its
            # parent dies (even by SIGKILL) instead of computing on as an orphan.
            self.process = subprocess.Popen(
                command, env=environment, start_new_session=True, preexec_fn=_die_with_parent()
            )
            log.info("started the gadget process %d: %s", self.process.pid, " ".join(command[1:]))
            server.settimeout(POLL_S)
            wait = min(self.deadline - time.monotonic(), 120.0)
            connect_deadline = time.monotonic() + wait
            while True:
                try:
                    connection, _ = server.accept()
                    break
                except TimeoutError:
                    if self.stop_request:
                        raise SessionError(
                            f"{self.stop_request.reason} before the gadget connected"
                        ) from None
                    if self.process.poll() is not None:
                        raise SessionError(
                            f"{describe_status(self.process.returncode)} before connecting"
                        ) from None
                    if time.monotonic() > connect_deadline:
                        raise SessionError(
                            f"timed out: the gadget process did not connect within {wait:.0f} s"
                        ) from None
        connection.settimeout(0.5)
        return connection

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, seconds: float) -> int:
        assert self.process is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.stop_request:
            try:
                return self.process.wait(POLL_S)
            except subprocess.TimeoutExpired:
                continue
        if self.process.poll() is None:
            log.error("the gadget process %d did not exit; terminating it", self.process.pid)
            self.stop()
        return self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            log.info("stopping the gadget process %d", self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def describe_exit(self, code: int) -> str:
        return describe_status(code)


class ThreadPeer(Peer):
    """The target served by ``gadgetron.external.listen`` in a thread of this process."""

    def __init__(self, module: str, target: str, deadline: float, stop: StopRequest | None = None) -> None:
        self.handler = load_target(module, target)
        self.deadline = deadline
        self.stop_request = stop if stop is not None else StopRequest()
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None

    def connect(self) -> socket.socket:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::", 0))
            port = probe.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, args=(port,), name="pogmdm-gadget", daemon=True)
        self.thread.start()
        connect_deadline = min(self.deadline, time.monotonic() + 30.0)
        while True:
            try:
                connection = socket.create_connection(("localhost", port), timeout=5.0)
                break
            except OSError:
                if self.stop_request:
                    raise SessionError(f"{self.stop_request.reason} before the gadget connected") from None
                if not self.alive() or time.monotonic() > connect_deadline:
                    raise SessionError(f"could not connect to the gadget listening on port {port}") from None
                time.sleep(0.05)
        connection.settimeout(0.5)
        return connection

    def _serve(self, port: int) -> None:
        try:
            listen(port, self.handler)
        except BaseException as error:
            self.failure = error
            log.error("the gadget failed: %s: %s", type(error).__name__, error)

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def wait(self, seconds: float) -> int:
        assert self.thread is not None
        end = time.monotonic() + seconds
        while self.thread.is_alive() and time.monotonic() < end and not self.stop_request:
            self.thread.join(POLL_S)
        if self.thread.is_alive():
            log.error("the gadget thread did not finish; leaving it (a daemon thread)")
            return 1
        return 0 if self.failure is None else 1

    def stop(self) -> None:
        pass  # a daemon thread: its connection is closed, it cannot be killed

    def describe_exit(self, code: int) -> str:
        if self.failure is None:
            return "the gadget thread did not finish"
        return f"the gadget raised {type(self.failure).__name__}: {self.failure}"


def describe_status(code: int) -> str:
    """``the gadget process exited with status 1`` / ``died (signal 9, SIGKILL)``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"the gadget process died (signal {-code}, {name})"
    return f"the gadget process exited with status {code}"


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies, else ``None``.

    ``prctl`` is looked up here, in the parent: the child between fork and exec only calls it.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def load_target(module: str, target: str) -> Callable[[Any], None]:
    """The gadget callable, resolved the way ``python -m gadgetron`` does (class -> instance.handle)."""
    symbol = getattr(importlib.import_module(module), target)
    if inspect.isclass(symbol):
        return lambda connection: symbol().handle(connection)
    if not callable(symbol):
        raise TypeError(f"{module}.{target} is neither a function nor a class")
    return symbol
