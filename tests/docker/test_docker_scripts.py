"""The scripts the image runs: docker/verify_image.py (pins, torch variant, installed chains)
and docker/healthcheck.py against a stand-in Gadgetron server speaking the query protocol."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from docker_context import healthcheck, verify_image

# --------------------------------------------------------------------------------------------
# verify_image.py helpers (the build runs them inside the image)


def test_read_pins_and_check_pins(tmp_path: Path) -> None:
    pytest_version = importlib.metadata.version("pytest")
    constraints = tmp_path / "c.txt"
    constraints.write_text(
        f"# c\npytest=={pytest_version}  # ok\nnot-installed-pkg-xyz==1.0\nfoo>=2\n", encoding="utf-8"
    )
    pins = verify_image.read_pins(constraints)
    assert pins == {"pytest": pytest_version, "not-installed-pkg-xyz": "1.0"}
    problems = verify_image.check_pins(pins)
    assert len(problems) == 1 and "not installed" in problems[0]
    assert "0.0.1 but" in verify_image.check_pins({"pytest": "0.0.1"})[0]


def test_check_pins_ignores_a_local_label_only_when_the_pin_has_none() -> None:
    torch_version = importlib.metadata.version("torch")
    public = torch_version.split("+")[0]
    assert verify_image.check_pins({"torch": public}) == []
    assert verify_image.check_pins({"torch": public + "+cu999"})


def test_check_torch_matches_the_build() -> None:
    import torch

    if torch.version.cuda is None:
        assert verify_image.check_torch("cpu") == []
        assert verify_image.check_torch("cu126")
    else:
        assert verify_image.check_torch("cpu")


def test_check_installed_chains(tmp_path: Path) -> None:
    packaged = tmp_path / "pkg"
    installed = tmp_path / "gadgetron_config"
    packaged.mkdir()
    installed.mkdir()
    (packaged / "a.xml").write_text("<a/>", encoding="utf-8")
    (packaged / "b.xml").write_text("<b/>", encoding="utf-8")
    chains = sorted(packaged.glob("*.xml"))
    assert len(verify_image.check_installed_chains(chains, installed)) == 2
    (installed / "a.xml").write_text("<a/>", encoding="utf-8")
    (installed / "b.xml").write_text("<B/>", encoding="utf-8")
    problems = verify_image.check_installed_chains(chains, installed)
    assert len(problems) == 1 and "differs" in problems[0]


# --------------------------------------------------------------------------------------------
# healthcheck.py against a stand-in Gadgetron server speaking the query protocol


class FakeGadgetron:
    """Accepts one connection on 127.0.0.1 and answers a QUERY like Gadgetron 4's QueryHandler."""

    def __init__(self, behaviour: str = "answer") -> None:
        self.behaviour = behaviour
        self.received_query: str | None = None
        self.received_close = False
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(10)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read(self, conn: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ConnectionError("client closed")
            data += chunk
        return data

    def _serve(self) -> None:
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                if self.behaviour == "hang_up":
                    return
                message_id, reserved, correlation, length = struct.unpack("<HQQQ", self._read(conn, 26))
                assert (message_id, reserved) == (6, 0)
                self.received_query = self._read(conn, length).decode()
                if self.behaviour == "wrong_id":
                    conn.sendall(struct.pack("<H", 5))
                    return
                if self.behaviour == "wrong_correlation":
                    correlation += 1
                answer = b"4.7.2"
                conn.sendall(struct.pack("<HQQ", 7, correlation, len(answer)) + answer)
                self.received_close = struct.unpack("<H", self._read(conn, 2))[0] == 4
            except (ConnectionError, OSError, AssertionError, struct.error):
                return

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=10)


@pytest.fixture
def fake_gadgetron(request: pytest.FixtureRequest) -> Iterator[FakeGadgetron]:
    server = FakeGadgetron(getattr(request, "param", "answer"))
    yield server
    server.close()


def test_healthcheck_healthy_when_gadgetron_answers(fake_gadgetron: FakeGadgetron, capsys) -> None:
    assert healthcheck.main(["--port", str(fake_gadgetron.port), "--timeout", "5"]) == 0
    fake_gadgetron.thread.join(timeout=10)
    assert fake_gadgetron.received_query == "gadgetron::version"
    assert fake_gadgetron.received_close
    assert "4.7.2" in capsys.readouterr().out


@pytest.mark.parametrize("fake_gadgetron", ["hang_up", "wrong_id", "wrong_correlation"], indirect=True)
def test_healthcheck_unhealthy_when_the_answer_is_wrong(fake_gadgetron: FakeGadgetron, capsys) -> None:
    assert healthcheck.main(["--port", str(fake_gadgetron.port), "--timeout", "5"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_unhealthy_when_nothing_listens(capsys) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    assert healthcheck.main(["--port", str(port), "--timeout", "2"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_healthcheck_query_frame_layout() -> None:
    frame = healthcheck.encode_query("gadgetron::version", correlation_id=7)
    assert frame[:2] == struct.pack("<H", 6)
    assert struct.unpack("<QQQ", frame[2:26]) == (0, 7, len("gadgetron::version"))
    assert frame[26:] == b"gadgetron::version"
