"""Workers that die mid-request: the request fails fast with a 503, a new worker replaces the
dead one, and the pool serves throughout. A dead zygote is replaced while the workers serve."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from pool_support import busy_worker, eventually, parent_pid, process_exists, run

from servekit.errors import ErrorCode, Unavailable

ONE = {"x": np.ones(1)}


def test_a_killed_worker_fails_its_request_fast_and_is_replaced(probe_pool):
    async def scenario():
        pool = probe_pool(2)
        await pool.load()
        folder = pool.spec.path.parent
        try:
            old = set(pool.pids)
            request = asyncio.ensure_future(
                pool.predict({"x": np.ones(1), "sleep": np.ones(1) * 30})
            )
            await eventually(lambda: busy_worker(folder) is not None)
            victim = busy_worker(folder)
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            with pytest.raises(Unavailable) as failure:
                await request
            assert time.monotonic() - killed_at < 2
            served = await pool.predict(ONE)  # the other worker, or the replacement
            await eventually(lambda: len(pool.pids) == 2 and victim not in pool.pids)
            replacement = (set(pool.pids) - old).pop()
            assert parent_pid(replacement) == pool.zygote_pid  # forked, not loaded again
            answers = await asyncio.gather(*(pool.predict(ONE) for _ in range(6)))
        finally:
            await pool.unload()
        message = str(failure.value)
        assert failure.value.code is ErrorCode.UNAVAILABLE
        assert "model 'probe' version '1' worker" in message
        assert f"pid {victim}" in message and "signal 9: SIGKILL" in message
        assert "the request was not completed" in message
        assert int(served["pid"][0]) != victim
        assert all(a["y"].tolist() == [1.0] for a in answers)

    run(scenario)


@pytest.mark.parametrize(
    ("value", "how"), [(1011.0, "signal 11: SIGSEGV"), (1003.0, "exited with code 3")]
)
def test_a_worker_that_segfaults_or_exits_is_reported_and_replaced(probe_pool, value, how):
    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            (victim,) = pool.pids
            with pytest.raises(Unavailable, match=how):
                await pool.predict({"x": np.array([value])})
            result = await pool.predict(ONE)  # waits for the replacement
        finally:
            await pool.unload()
        assert int(result["pid"][0]) != victim

    run(scenario)


def test_requests_wait_for_the_restart_when_no_worker_is_alive(probe_pool):
    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            (victim,) = pool.pids
            os.kill(victim, signal.SIGKILL)
            await eventually(lambda: not process_exists(victim) or victim not in pool.pids)
            result = await pool.predict(ONE)
        finally:
            await pool.unload()
        assert int(result["pid"][0]) != victim

    run(scenario)


def test_a_dead_zygote_is_replaced_while_the_workers_keep_serving(probe_pool):
    async def scenario():
        pool = probe_pool(2)
        await pool.load()
        try:
            workers, zygote = set(pool.pids), pool.zygote_pid
            os.kill(zygote, signal.SIGKILL)
            during = await asyncio.gather(*(pool.predict(ONE) for _ in range(4)))
            await eventually(lambda: pool.zygote_pid not in (None, zygote))
            assert set(pool.pids) == workers  # the old workers still serve
            victim = pool.pids[0]
            os.kill(victim, signal.SIGKILL)
            await eventually(lambda: len(pool.pids) == 2 and victim not in pool.pids)
            replacement = (set(pool.pids) - workers).pop()
            assert parent_pid(replacement) == pool.zygote_pid
            after = await asyncio.gather(*(pool.predict(ONE) for _ in range(4)))
            everyone = [*workers, zygote, pool.zygote_pid, replacement]
        finally:
            await pool.unload()
        assert {int(r["pid"][0]) for r in during} <= workers
        assert all(r["y"].tolist() == [1.0] for r in after)
        await eventually(lambda: not any(process_exists(pid) for pid in everyone), 5)

    run(scenario)


def test_without_a_worker_or_zygote_requests_get_503_after_restart_wait(probe_pool):
    async def scenario():
        pool = probe_pool(1, restart_wait=0.3)
        await pool.load()
        folder = pool.spec.path.parent
        (folder / "slow-load").write_text("1.5")  # the reload takes a while
        try:
            zygote = pool.zygote_pid
            os.kill(zygote, signal.SIGKILL)
            await eventually(lambda: pool.zygote_pid != zygote)  # a new one is loading
            os.kill(pool.pids[0], signal.SIGKILL)
            await eventually(lambda: not pool.pids)
            started = time.monotonic()
            with pytest.raises(Unavailable, match="no live worker"):
                await pool.predict(ONE)
            assert 0.25 < time.monotonic() - started < 1.5
            await eventually(lambda: len(pool.pids) == 1)  # after the reload
            result = await pool.predict(ONE)
        finally:
            await pool.unload()
        assert result["y"].tolist() == [1.0]

    run(scenario)


SERVER = """
import asyncio, sys
from pathlib import Path
from servekit.runtimes import ModelSpec
from servekit.workers import WorkerPoolRuntime

async def main():
    pool = WorkerPoolRuntime("custom", ModelSpec("probe", "1", Path(sys.argv[1])), 2)
    await pool.load()
    print(*pool.pids, pool.zygote_pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_workers_exit_when_the_server_dies_without_unloading(probe_pool):
    model = probe_pool(1).spec.path
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(model)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 3 and all(process_exists(pid) for pid in pids)
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    deadline = time.monotonic() + 10
    while any(process_exists(pid) for pid in pids):
        assert time.monotonic() < deadline, "worker processes outlived the server"
        time.sleep(0.05)
