"""Running ``pogmdm-recon`` against misbehaving gadgets: chains naming a fault gadget, the command
as its own process, and what its stderr, output file and child processes show.

Shared by the replay fault tests in this folder (not a test module itself).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import ismrmrd

from gadgets.demo.synthetic import SyntheticScan

PROJECT = Path(__file__).resolve().parents[2]
BUFFERED_CHAIN = PROJECT / "config" / "pogmdm_buffered.xml"
SCAN = SyntheticScan(matrix=16, coils=2, slices=3, acceleration=1, calibration_lines=0, oversampling=1)


def fault_chain(folder: Path, target: str, template: str | None = None) -> Path:
    """A chain XML whose Python gadget is ``tests.helpers.fault_gadgets.<target>``."""
    execute = f'<execute name="tests.helpers.fault_gadgets" target="{target}" type="python"/>'
    if template is None:
        text = (
            "<configuration><version>2</version><stream><external>"
            f"{execute}<configuration/></external></stream></configuration>"
        )
    else:
        text = re.sub(r"<execute [^>]*/>", execute, Path(template).read_text(encoding="utf-8"))
        text = re.sub(r"<configuration>\s*<property.*?</configuration>", "<configuration/>", text, flags=re.S)
    path = folder / f"{target}.xml"
    path.write_text(text, encoding="utf-8")
    return path


class Cli:
    """``pogmdm-recon ARGUMENTS`` as its own process; a thread collects its stderr lines.

    (A thread, so that a gadget child that outlives it and holds the pipe cannot hang a test.)
    """

    def __init__(self, arguments: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gadgets.replay", *arguments],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, limit: float = 60.0) -> str:
        """The first stderr line containing ``text`` (waiting up to ``limit`` seconds)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self.reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} on stderr:\n{self.stderr}")

    def finish(self, limit: float = 60.0) -> tuple[int, str]:
        """``(exit status, whole stderr)``; kills the process after ``limit`` seconds."""
        try:
            status = self.process.wait(limit)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"pogmdm-recon did not end within {limit} s:\n{self.stderr}") from None
        self.reader.join(5.0)
        return status, self.stderr

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(5.0)
        if self.process.stderr is not None and not self.reader.is_alive():
            self.process.stderr.close()


def last_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    return lines[-1]


def image_slices(path: Path, group: str) -> list[int]:
    """The slice index of every image in ``/<group>/image_1``."""
    with ismrmrd.Dataset(str(path), group, create_if_needed=False) as dataset:
        return [dataset.read_image("image_1", i).slice for i in range(dataset.number_of_images("image_1"))]


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def process_gone(pid: int, limit: float) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``limit`` seconds."""
    end = time.monotonic() + limit
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.05)
