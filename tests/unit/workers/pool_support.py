"""Shared by the worker pool tests: the probe model, a bounded asyncio runner, process checks."""

from __future__ import annotations

import asyncio
import os
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

PROBE = """
import ctypes
import os
import time

import numpy as np

import servekit


class ModelBug(Exception):
    '''Defined in model.py, so the server process cannot import it.'''


class Probe(servekit.Model):
    '''Echoes x, says which process answered, and sleeps, fails or crashes on request.'''

    def load(self):
        if (self.path / "slow-load").exists():
            time.sleep(float((self.path / "slow-load").read_text()))

    def predict(self, inputs):
        x = inputs["x"]
        if "sleep" in inputs:
            (self.path / f"busy-{os.getpid()}").write_text("")
            time.sleep(float(inputs["sleep"].reshape(-1)[0]))
        if x.dtype.kind in "iuf" and x.size:
            if (x < 0).any():
                raise ValueError("negative input")
            if (x == 13).any():
                raise ModelBug("unlucky input")
            if (x == 666).any():
                raise servekit.errors.InvalidInput("666 is not allowed")
            if (x == 1011).any():
                ctypes.string_at(0)  # segmentation fault
            if (x == 1003).any():
                os._exit(3)
        return {
            "y": x,
            "pid": np.array([os.getpid()]),
            "threads": np.array([os.environ.get("OMP_NUM_THREADS", "")], dtype=object),
        }
"""


def run(scenario: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    """Run an async test body with a hard time limit (pytest-asyncio is not installed)."""

    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


def write_model(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.py"
    path.write_text(textwrap.dedent(source))
    return path


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def busy_worker(folder: Path) -> int | None:
    """The pid of the worker that began a slow Probe request (it leaves a file behind)."""
    found = sorted(folder.glob("busy-*"))
    return int(found[0].name.split("-")[1]) if found else None


def parent_pid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
