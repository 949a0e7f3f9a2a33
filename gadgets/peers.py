"""The gadget side of a replay session: a child process or a thread, started, watched, stopped.

* :class:`ChildPeer`: ``python -m gadgetron PORT MODULE TARGET`` connecting back to a listening
  socket, as Gadgetron's ``<execute>`` node does (this project is put on ``PYTHONPATH`` the
  way Gadgetron adds ``share/gadgetron/python``);
* :class:`ThreadPeer`: the target served by ``gadgetron.external.listen`` in a thread, as for a
  ``<connect>`` node.
"""

from __future__ import annotations

import abc
import importlib
import inspect
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gadgetron.external import listen

log = logging.getLogger("pogmdm.replay")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class SessionError(RuntimeError):
    """The session could not run to its end (no connection, protocol error, timeout)."""


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

    def __init__(self, module: str, target: str, env: dict[str, str], deadline: float) -> None:
        self.module, self.target, self.env, self.deadline = module, target, env, deadline
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
            log.info("starting %s", " ".join(command[1:]))
            self.process = subprocess.Popen(command, env=environment)
            server.settimeout(0.5)
            wait = min(self.deadline - time.monotonic(), 120.0)
            connect_deadline = time.monotonic() + wait
            while True:
                try:
                    connection, _ = server.accept()
                    break
                except TimeoutError:
                    if self.process.poll() is not None:
                        raise SessionError(
                            f"the gadget process exited (status {self.process.returncode}) before connecting"
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
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            log.error("the gadget process did not exit; terminating it")
            self.stop()
            return self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def describe_exit(self, code: int) -> str:
        return f"the gadget process exited with status {code}"


class ThreadPeer(Peer):
    """The target served by ``gadgetron.external.listen`` in a thread of this process."""

    def __init__(self, module: str, target: str, deadline: float) -> None:
        self.handler = load_target(module, target)
        self.deadline = deadline
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
        self.thread.join(seconds)
        if self.thread.is_alive():
            raise SessionError("the gadget thread did not finish")
        return 0 if self.failure is None else 1

    def stop(self) -> None:
        pass  # a daemon thread; it ends with its connection

    def describe_exit(self, code: int) -> str:
        return f"the gadget raised {type(self.failure).__name__}: {self.failure}"


def load_target(module: str, target: str) -> Callable[[Any], None]:
    """The gadget callable, resolved the way ``python -m gadgetron`` does (class -> instance.handle)."""
    symbol = getattr(importlib.import_module(module), target)
    if inspect.isclass(symbol):
        return lambda connection: symbol().handle(connection)
    if not callable(symbol):
        raise TypeError(f"{module}.{target} is neither a function nor a class")
    return symbol
