"""Tiny gadget targets that misbehave on purpose, for the replay's fault tests.

Chains name them as ``<execute name="tests.helpers.fault_gadgets" target="..." type="python"/>``; the
replay starts them as ``python -m gadgetron PORT tests.helpers.fault_gadgets TARGET`` with the project
root on ``PYTHONPATH`` (``tests`` is a namespace package there). They import neither torch nor
the reconstruction, so a child starts in about a second.

Each sends one small float image per reconstruction it is handed (at every ACQ_LAST_IN_SLICE
readout, or per ReconData), with the counters of that slice, then:

* :func:`image_per_slice`: nothing else (a well-behaved gadget);
* :func:`die_after_first_image`: SIGKILLs itself right after the first image;
* :func:`hang_after_first_image`: sleeps (never reads or answers again) after the first image;
* :func:`slow_image_per_slice`: waits ``FAULT_GADGET_DELAY`` seconds (default 3) first.

``FAULT_GADGET_MAKE_FOLDER`` / ``FAULT_GADGET_MAKE_FILE``: paths the gadget turns into an empty
folder / file before its first image (to spoil the output after the replay's checks passed).
A stream that ends without CLOSE ends the gadget quietly (gadgetron 1.4.1's reader would spin).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
from gadgetron.types import ReconData


def image_per_slice(connection: Any) -> None:
    _serve(connection)


def die_after_first_image(connection: Any) -> None:
    _serve(connection, after_first=lambda: os.kill(os.getpid(), signal.SIGKILL))


def hang_after_first_image(connection: Any) -> None:
    _serve(connection, after_first=lambda: time.sleep(600))


def slow_image_per_slice(connection: Any) -> None:
    time.sleep(float(os.environ.get("FAULT_GADGET_DELAY", "3")))
    _serve(connection)


def _serve(connection: Any, after_first: Callable[[], None] | None = None) -> None:
    _end_quietly_at_eof(connection)
    connection.filter(lambda item: isinstance(item, ismrmrd.Acquisition | ReconData))
    sent = 0
    try:
        for item in connection:
            header = _slice_header(item)
            if header is None:
                continue
            if sent == 0:
                _spoil_paths()
            connection.send(_image(header, sent + 1))
            sent += 1
            if sent == 1 and after_first is not None:
                after_first()
    except EOFError:
        return  # the replay ended the stream without CLOSE


def _slice_header(item: Any) -> ismrmrd.AcquisitionHeader | None:
    """The header that closes a reconstruction: a LAST_IN_SLICE readout, or a ReconData's first line."""
    if isinstance(item, ismrmrd.Acquisition):
        return item.getHead() if item.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) else None
    for header in item.bits[0].data.headers.flat:
        if header.number_of_samples:
            return header
    return None


def _image(header: ismrmrd.AcquisitionHeader, index: int) -> ismrmrd.Image:
    image = ismrmrd.Image.from_array(np.full((1, 1, 8, 8), float(index), dtype=np.float32))
    image.image_series_index = 1
    image.image_index = index
    for name in ("slice", "contrast", "phase", "repetition", "set"):
        setattr(image, name, getattr(header.idx, name))
    return image


def _spoil_paths() -> None:
    folder = os.environ.get("FAULT_GADGET_MAKE_FOLDER")
    if folder:
        path = Path(folder)
        if path.is_file():
            path.unlink()
        path.mkdir(parents=True, exist_ok=True)
    file = os.environ.get("FAULT_GADGET_MAKE_FILE")
    if file:
        path = Path(file)
        if path.is_dir():
            shutil.rmtree(path)
        path.write_bytes(b"not a folder")


def _end_quietly_at_eof(connection: Any) -> None:
    raw: socket.socket = connection.socket.socket

    def read(count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = raw.recv(count - len(chunks))
            if not chunk:
                raise EOFError("the stream ended without CLOSE")
            chunks += chunk
        return bytes(chunks)

    connection.socket.read = read
