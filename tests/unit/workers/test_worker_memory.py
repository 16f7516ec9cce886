"""The model is loaded once and shared: N workers do not cost N copies of its memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pool_support import run, write_model

from servekit.runtimes import ModelSpec
from servekit.workers import WorkerPoolRuntime

MB = 1024 * 1024
TABLE_MB = 200

BIG = f"""
import os

import numpy as np

import servekit


class Big(servekit.Model):
    def load(self):
        self.table = np.ones({TABLE_MB} * 1024 * 1024 // 8)  # touched: really resident

    def predict(self, inputs):
        # Reads every page of the table: reading does not un-share copy-on-write memory.
        return {{"sum": np.array([self.table.sum()]), "pid": np.array([os.getpid()])}}
"""


def memory(pid: int) -> dict[str, int]:
    """Bytes by kind from /proc/PID/smaps_rollup (Rss, Pss, Private_Dirty, ...)."""
    found = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        found[key] = int(value.split()[0]) * 1024
    return found


def test_workers_share_the_loaded_model(tmp_path):
    spec = ModelSpec(name="big", version="1", path=write_model(tmp_path, BIG))

    async def scenario():
        pool = WorkerPoolRuntime("custom", spec, 2)
        await pool.load()
        try:
            for _ in range(4):  # both workers read the whole table
                result = await pool.predict({"x": np.ones(1)})
                assert result["sum"][0] == TABLE_MB * MB // 8
            return [memory(pid) for pid in [*pool.pids, pool.zygote_pid]]
        finally:
            await pool.unload()

    figures = run(scenario)
    for worker in figures[:2]:
        private = worker["Private_Clean"] + worker["Private_Dirty"]
        assert worker["Rss"] > TABLE_MB * MB  # the table is mapped in every worker...
        assert private < 50 * MB  # ...but not copied into any
    # Three processes map the table; proportional shares add up to about one copy.
    assert sum(f["Pss"] for f in figures) < 1.5 * TABLE_MB * MB
