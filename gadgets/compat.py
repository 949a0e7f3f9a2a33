"""Everything this project does differently because of gadgetron 1.4.1's Python package.

``gadgetron.external`` 1.4.1 is used as it is (not patched on disk); where it misbehaves, the
gadget goes around it with the functions below, each naming what it works around:

* :func:`add_writer_first`: ``Connection.add_writer`` wraps the writer in a one-argument lambda
  that ``send`` then calls with two arguments ``(destination, item)`` and fails;
* :func:`guard_end_of_stream`: ``SocketWrapper.read`` loops forever when the peer disconnects
  without a CLOSE message (``recv`` returning ``b""``);
* :func:`ctypes_header_warnings_ignored`: ReconData readers put ctypes headers into an object
  array, on which numpy warns about their PEP 3118 buffer format (harmless);
* :func:`image_data`: ``ismrmrd.Image`` serialises under numpy 2 without a copy only from a
  C-contiguous, writable ``float32`` array of shape ``(channels, z, y, x)``.

Message ids are gadgetron's own (:mod:`gadgetron.external.constants`), re-exported here under
short names for the wire code of the gadget and of the offline replay.
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from gadgetron.external import constants

#: Message ids of the Gadgetron protocol, as ``gadgetron.external.constants`` defines them.
CONFIG = constants.GADGET_MESSAGE_CONFIG
HEADER = constants.GADGET_MESSAGE_HEADER
CLOSE = constants.GADGET_MESSAGE_CLOSE
TEXT = constants.GADGET_MESSAGE_TEXT
ERROR = constants.GADGET_MESSAGE_ERROR
ACQUISITION = constants.GADGET_MESSAGE_ISMRMRD_ACQUISITION
IMAGE = constants.GADGET_MESSAGE_ISMRMRD_IMAGE
RECON_DATA = constants.GADGET_MESSAGE_RECON_DATA
WAVEFORM = constants.GADGET_MESSAGE_ISMRMRD_WAVEFORM


def add_writer_first(
    connection: Any, accepts: Callable[[Any], bool], writer: Callable[[Any, Any], None]
) -> None:
    """Register ``writer(destination, item)`` for the items ``accepts(item)`` holds, ahead of the
    default writers (instead of ``connection.add_writer``, which 1.4.1 wraps wrongly)."""
    connection.writers.insert(0, (accepts, writer))


def guard_end_of_stream(connection: Any) -> None:
    """Make reads on a closed socket raise :class:`ConnectionError` instead of spinning.

    Replaces the ``read`` of this connection's ``SocketWrapper`` (which loops forever on
    ``recv`` returning ``b""`` in 1.4.1) with one that raises when the peer has gone.
    """
    wrapper = connection.socket
    raw: socket.socket = wrapper.socket

    def read(count: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < count:
            chunk = raw.recv(count - len(chunks), socket.MSG_WAITALL)
            if not chunk:
                raise ConnectionError("the Gadgetron side closed the connection without a CLOSE message")
            chunks += chunk
        return bytes(chunks)

    wrapper.read = read


@contextlib.contextmanager
def ctypes_header_warnings_ignored() -> Iterator[None]:
    """Silence numpy's PEP 3118 warning about the ctypes headers 1.4.1 puts in object arrays
    (the headers stay ctypes objects; the warning would be an error under ``-W error``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "A builtin ctypes object gave a PEP3118", RuntimeWarning)
        yield


def image_data(pixels: np.ndarray) -> np.ndarray:
    """``(H, W)`` pixels -> ``(1, 1, H, W)`` float32, C-contiguous and writable (an own copy):
    what ``ismrmrd.Image`` and 1.4.1's writers serialise under numpy 2 without a copy."""
    return np.ascontiguousarray(pixels, dtype=np.float32).reshape(1, 1, *pixels.shape).copy()
