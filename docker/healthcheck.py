"""Container health check: ask the Gadgetron server on this host for its version.

Used by the image's HEALTHCHECK. A bare TCP connect would pass while the server accepts
connections but no longer answers; instead this speaks Gadgetron 4's own query protocol,
the one ``gadgetron_ismrmrd_client -q -Q gadgetron::version`` uses:

    client -> QUERY    u16 id 6, u64 reserved 0, u64 correlation id, u64 length, query text
    server -> RESPONSE u16 id 7, u64 correlation id, u64 length, answer text
    client -> CLOSE    u16 id 4  (the server leaves its CONFIG state without starting a chain)

Exit status 0 (healthy) only when the answer arrives with the same correlation id;
1 otherwise, with the reason on stderr. Standard library only, Python >= 3.8.

    python healthcheck.py [--host 127.0.0.1] [--port 9002] [--timeout 5]

The port defaults to ``$GADGETRON_PORT`` or 9002.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import struct
import sys

QUERY = 6
RESPONSE = 7
CLOSE = 4
DEFAULT_QUERY = "gadgetron::version"
CORRELATION_ID = 0x706F676D  # any value; echoed back by the server
MAX_ANSWER_BYTES = 1 << 20


class HealthCheckError(RuntimeError):
    """The server did not answer the query as Gadgetron does."""


def encode_query(query: str, correlation_id: int = CORRELATION_ID) -> bytes:
    """The QUERY message for ``query`` (little-endian, as on the Gadgetron wire)."""
    text = query.encode("utf-8")
    return struct.pack("<HQQQ", QUERY, 0, correlation_id, len(text)) + text


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise HealthCheckError(f"connection closed after {size - remaining} of {size} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def query_server(
    host: str,
    port: int,
    query: str = DEFAULT_QUERY,
    timeout: float = 5.0,
    correlation_id: int = CORRELATION_ID,
) -> str:
    """Send ``query`` to the Gadgetron server at ``host:port`` and return its answer text.

    Raises ``OSError`` when nothing accepts the connection (or on a timeout) and
    ``HealthCheckError`` when something answers but not with a matching RESPONSE.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(encode_query(query, correlation_id))
        (message_id,) = struct.unpack("<H", _read_exactly(sock, 2))
        if message_id != RESPONSE:
            raise HealthCheckError(f"expected RESPONSE (id {RESPONSE}), got message id {message_id}")
        answer_id, length = struct.unpack("<QQ", _read_exactly(sock, 16))
        if answer_id != correlation_id:
            raise HealthCheckError(f"correlation id {answer_id} does not match the query's {correlation_id}")
        if length > MAX_ANSWER_BYTES:
            raise HealthCheckError(f"implausible answer length {length}")
        answer = _read_exactly(sock, length).decode("utf-8", errors="replace")
        with contextlib.suppress(OSError):  # the answer already proved the server healthy
            sock.sendall(struct.pack("<H", CLOSE))
    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GADGETRON_PORT", "9002")))
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds, per socket operation")
    parser.add_argument("--query", default=DEFAULT_QUERY)
    args = parser.parse_args(argv)
    try:
        answer = query_server(args.host, args.port, args.query, args.timeout)
    except (OSError, HealthCheckError) as error:
        print(f"unhealthy: Gadgetron at {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    print(f"healthy: {args.query} = {answer.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
