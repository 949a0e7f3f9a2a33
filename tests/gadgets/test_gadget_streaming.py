"""The gadget streams: each slice's images go back as soon as it is reconstructed.

An in-process stand-in for ``gadgetron.external.Connection`` hands the gadget a two-repetition
raw file one readout at a time and records, for every image sent, how many readouts the gadget
had taken by then. Reconstructing one slice at a time, the first repetition's image must leave
before the second repetition's readouts are read, not when the stream closes. With slices
reconstructed side by side, the reader holds the second repetition back until an image arrives
(as a scanner between two measurements would): the first image must leave from its worker
while the main thread waits for readouts, and the images must leave in the order the slices came.
With ``batch_slices`` the slices that wait together are solved in one batch: same images, same
order, and a slice that fails inside a batch is reported while the others come back.
"""

from __future__ import annotations

import socket
import threading
import time
import types
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ismrmrd
import numpy as np
import pytest
from gadget_helpers import generator_available, read_raw, shepp_logan_raw

from gadgets.pogmdm_gadget import run_gadget

CONFIG = (
    '<configuration><property name="map_iterations" value="2"/>'
    '<property name="device" value="cpu"/><property name="parallel_slices" value="{workers}"/>'
    '<property name="batch_slices" value="{batch}"/>'
    "</configuration>"
)
GATE_TIMEOUT_S = 120.0


class RecordingConnection:
    """What ``run_gadget`` uses of a gadgetron ``Connection``, reading from a list."""

    def __init__(
        self,
        header: bytes,
        acquisitions: list[ismrmrd.Acquisition],
        workers: int = 1,
        hold_at: int = 0,
        batch: int = 0,
    ) -> None:
        config = CONFIG.format(workers=workers, batch=batch)
        self.header = ismrmrd.xsd.CreateFromDocument(header)
        self.config = ElementTree.fromstring(config)
        self.raw_bytes = types.SimpleNamespace(config=config.encode(), header=header)
        self.hold_at = hold_at  # > 0: wait for an image before handing out this readout
        self.image_sent = threading.Event()
        self.held_until_timeout = False
        self.images: list[ismrmrd.Image] = []
        self._ends = socket.socketpair()
        self.socket = types.SimpleNamespace(socket=self._ends[0])
        self.writers: list[tuple[Callable[[Any], bool], Callable[[Any, Any], None]]] = []
        self._acquisitions = acquisitions
        self.taken = 0
        self.sent: list[tuple[str, int]] = []  # (type of the item, readouts taken when sent)

    def filter(self, predicate: Callable[[Any], bool]) -> None:
        self._predicate = predicate

    def __iter__(self) -> Iterator[ismrmrd.Acquisition]:
        for acquisition in self._acquisitions:
            if self.hold_at and self.taken + 1 == self.hold_at:
                self.held_until_timeout = not self.image_sent.wait(GATE_TIMEOUT_S)
            self.taken += 1
            yield acquisition

    def send(self, item: Any) -> None:
        self.sent.append((type(item).__name__, self.taken))
        if isinstance(item, ismrmrd.Image):
            self.images.append(item)
            self.image_sent.set()

    def close(self) -> None:
        for end in self._ends:
            end.close()


def _connection(
    tmp_path: Path, repetitions: int, workers: int, hold: bool, batch: int = 0
) -> tuple[RecordingConnection, int, int]:
    """A connection over a ``repetitions``-slice raw file; ``hold``: the reader waits for an image
    before the second slice. Returns it, the readouts taken once the second slice starts and the
    readouts in all."""
    raw = shepp_logan_raw(tmp_path / "raw.h5", matrix=32, coils=4, repetitions=repetitions, noise_level=0.005)
    header, acquisitions = read_raw(raw)
    first_of_second = [acquisition.idx.repetition for acquisition in acquisitions].index(1) + 1
    connection = RecordingConnection(header, acquisitions, workers, first_of_second if hold else 0, batch)
    return connection, first_of_second, len(acquisitions)


def _stream(
    tmp_path: Path, repetitions: int, workers: int, hold: bool, batch: int = 0
) -> tuple[RecordingConnection, int, int]:
    """Run the gadget over :func:`_connection`'s stream; returns what it returns."""
    connection, first_of_second, total = _connection(tmp_path, repetitions, workers, hold, batch)
    try:
        run_gadget(connection, "acquisitions")
    finally:
        connection.close()
    return connection, first_of_second, total


@pytest.mark.skipif(
    not generator_available(), reason="Debian's ismrmrd_generate_cartesian_shepp_logan is missing"
)
def test_each_slice_is_sent_before_the_next_one_is_read(tmp_path: Path) -> None:
    connection, first_of_second, total = _stream(tmp_path, repetitions=2, workers=1, hold=False)
    images = [taken for kind, taken in connection.sent if kind == "Image"]
    assert len(images) == 2, connection.sent
    assert images[0] < first_of_second, f"first image sent after {images[0]} readouts: held back"
    assert images[1] == total


@pytest.mark.skipif(
    not generator_available(), reason="Debian's ismrmrd_generate_cartesian_shepp_logan is missing"
)
def test_side_by_side_slices_leave_as_soon_as_done_and_in_order(tmp_path: Path) -> None:
    connection, first_of_second, _ = _stream(tmp_path, repetitions=3, workers=2, hold=True)
    assert not connection.held_until_timeout, "no image left while the reader waited: held back"
    images = [taken for kind, taken in connection.sent if kind == "Image"]
    assert len(images) == 3, connection.sent
    assert images[0] < first_of_second
    assert [image.repetition for image in connection.images] == [0, 1, 2]
    assert [image.image_index for image in connection.images] == [1, 2, 3]


@pytest.mark.skipif(
    not generator_available(), reason="Debian's ismrmrd_generate_cartesian_shepp_logan is missing"
)
def test_slices_waiting_together_are_solved_as_one_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``batch_slices`` the first slice starts alone; the two that arrive while it runs go
    together next; the images equal a one-by-one run's and leave in order."""
    import recon_core.recon.batch as batch_module

    batches: list[int] = []
    connection, _, total = _connection(tmp_path, repetitions=3, workers=1, hold=False, batch=3)
    real_batch = batch_module.reconstruct_batch

    def recording_batch(slices: list[Any], *args: Any, **kwargs: Any) -> list[Any]:
        batches.append(len(slices))
        if len(batches) == 1:  # hold the first until every readout was read: the rest wait together
            deadline = time.monotonic() + GATE_TIMEOUT_S
            while connection.taken < total and time.monotonic() < deadline:
                time.sleep(0.01)
        return real_batch(slices, *args, **kwargs)

    monkeypatch.setattr(batch_module, "reconstruct_batch", recording_batch)
    try:
        run_gadget(connection, "acquisitions")
    finally:
        connection.close()
    batched = connection
    assert batches == [1, 2]
    (tmp_path / "one_by_one").mkdir()
    one_by_one, _, _ = _stream(tmp_path / "one_by_one", repetitions=3, workers=1, hold=False, batch=1)
    assert batches == [1, 2]  # batch_slices=1: the one-by-one pipeline, no batch call
    assert [image.repetition for image in batched.images] == [0, 1, 2]
    assert [image.image_index for image in batched.images] == [1, 2, 3]
    for first, second in zip(batched.images, one_by_one.images, strict=True):
        difference = np.linalg.norm(first.data - second.data) / np.linalg.norm(second.data)
        assert difference < 1e-3


@pytest.mark.skipif(
    not generator_available(), reason="Debian's ismrmrd_generate_cartesian_shepp_logan is missing"
)
def test_a_slice_failing_inside_a_batch_is_reported_and_the_others_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recon_core.recon.batch as batch_module
    from gadgets.pogmdm_gadget import ReconstructionError

    prepared: list[int] = []
    real_prepare = batch_module.prepare_slice

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        prepared.append(len(prepared))
        if len(prepared) == 2:
            raise ValueError("simulated bad slice")
        return real_prepare(*args, **kwargs)

    monkeypatch.setattr(batch_module, "prepare_slice", second_fails)
    connection, _, _ = _connection(tmp_path, repetitions=3, workers=1, hold=False, batch=3)
    try:
        with pytest.raises(ReconstructionError, match="simulated bad slice"):
            run_gadget(connection, "acquisitions")
    finally:
        connection.close()
    assert [image.repetition for image in connection.images] == [0, 2]
    errors = [kind for kind, _ in connection.sent if kind == "GadgetError"]
    assert len(errors) == 1
