"""The adaptive batcher: exact results, size limits, delay, preferred sizes, queue limits,
timeouts and per-request errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np
import pytest

from servekit.core.batching import AdaptiveBatcher, BatchingPolicy
from servekit.errors import InvalidInput, Unavailable


class FakeModel:
    """Doubles its input; records every batch size; raises for negative values."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.batches: list[int] = []
        self.gate = gate

    async def predict(self, inputs: Mapping[str, np.ndarray], outputs=None, parameters=None):
        x = inputs["x"]
        self.batches.append(len(x))
        if self.gate is not None:
            await self.gate.wait()
        if (x < 0).any():
            raise ValueError("negative input")
        result = {"y": x * 2, "total": x.sum(axis=1)}
        if outputs is not None:
            result = {k: v for k, v in result.items() if k in outputs}
        return result


def run(coro):
    return asyncio.run(coro)


def rows(n: int, start: float = 0.0, width: int = 3) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n * width, dtype=np.float64).reshape(n, width)}


def test_concurrent_mixed_sizes_return_exactly_the_unbatched_results() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=5), "m"
        )
        sizes = [1 + (i * 7) % 5 for i in range(120)]
        requests = [rows(n, start=i * 100) for i, n in enumerate(sizes)]
        results = await asyncio.gather(*(batcher.predict(r) for r in requests))
        for request, result in zip(requests, results, strict=True):
            np.testing.assert_array_equal(result["y"], request["x"] * 2)
            np.testing.assert_array_equal(result["total"], request["x"].sum(axis=1))
        assert max(model.batches) <= 8
        assert sum(model.batches) == sum(sizes)
        assert len(model.batches) < len(sizes)  # requests really were combined
        await batcher.stop()

    run(main())


def test_batch_never_exceeds_max_batch_size_and_requests_keep_their_order() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=5, max_batch_delay_ms=20), "m"
        )
        requests = [rows(3, start=i * 10) for i in range(10)]
        results = await asyncio.gather(*(batcher.predict(r) for r in requests))
        assert all(size <= 5 for size in model.batches)
        assert [r["y"][0, 0] for r in results] == [i * 20.0 for i in range(10)]
        await batcher.stop()

    run(main())


def test_request_larger_than_max_batch_size_is_refused() -> None:
    async def main() -> None:
        batcher = AdaptiveBatcher(FakeModel().predict, BatchingPolicy(max_batch_size=4), "m")
        with pytest.raises(
            InvalidInput, match="request has 5 rows, more than its max_batch_size 4"
        ):
            await batcher.predict(rows(5))

    run(main())


def test_a_lone_request_waits_the_delay_and_no_less() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=80), "m"
        )
        started = time.perf_counter()
        await batcher.predict(rows(1))
        waited = time.perf_counter() - started
        assert waited >= 0.080  # the timer never fires early
        assert waited < 2.0  # and the request is not held indefinitely
        assert model.batches == [1]
        await batcher.stop()

    run(main())


def test_a_full_batch_leaves_without_waiting_for_the_delay() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=4, max_batch_delay_ms=30_000), "m"
        )
        await asyncio.wait_for(asyncio.gather(*(batcher.predict(rows(1)) for _ in range(4))), 10)
        assert model.batches == [4]
        await batcher.stop()

    run(main())


def test_a_batch_that_fills_while_the_runner_waits_leaves_at_once() -> None:
    """Arrivals one by one: the runner sleeps on the deadline and is woken only when the
    queued rows could fill a batch; rows of another shape do not count toward it."""

    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=4, max_batch_delay_ms=30_000), "m"
        )
        first = asyncio.ensure_future(batcher.predict(rows(2)))
        await asyncio.sleep(0.02)
        other = asyncio.ensure_future(batcher.predict(rows(2, width=5)))  # 4 rows queued
        await asyncio.sleep(0.02)
        assert model.batches == []  # 4 rows, but no 4 that fit together
        second = asyncio.ensure_future(batcher.predict(rows(2, start=100.0)))
        done = await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert model.batches == [4]
        assert np.array_equal(done[1]["y"], rows(2, start=100.0)["x"] * 2)
        assert not other.done()  # still waiting for its own batch (30 s delay)
        await batcher.stop()
        with pytest.raises(Unavailable):
            await other

    run(main())


def test_a_preferred_size_leaves_as_soon_as_it_is_reached() -> None:
    async def main() -> None:
        model = FakeModel()
        policy = BatchingPolicy(
            max_batch_size=16, max_batch_delay_ms=30_000, preferred_batch_sizes=(2, 4)
        )
        batcher = AdaptiveBatcher(model.predict, policy, "m")
        await asyncio.wait_for(asyncio.gather(*(batcher.predict(rows(1)) for _ in range(4))), 10)
        assert model.batches == [4]  # the largest preferred size that could be formed
        await asyncio.wait_for(asyncio.gather(*(batcher.predict(rows(1)) for _ in range(2))), 10)
        assert model.batches == [4, 2]
        await batcher.stop()

    run(main())


def test_queue_full_is_refused_with_503() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        model = FakeModel(gate)
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=1, max_queue_size=2), "m"
        )
        running = asyncio.ensure_future(batcher.predict(rows(1)))
        await asyncio.sleep(0.01)  # the first request is now inside the model
        queued = [asyncio.ensure_future(batcher.predict(rows(1))) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Unavailable, match="queue is full"):
            await batcher.predict(rows(1))
        gate.set()
        await asyncio.gather(running, *queued)
        await batcher.stop()

    run(main())


def test_requests_waiting_past_the_timeout_get_503_and_are_never_run() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        model = FakeModel(gate)
        policy = BatchingPolicy(max_batch_size=1, timeout_ms=50)
        batcher = AdaptiveBatcher(model.predict, policy, "m")
        running = asyncio.ensure_future(batcher.predict(rows(1)))
        await asyncio.sleep(0.01)
        with pytest.raises(Unavailable, match="waited more than 50 ms"):
            await batcher.predict(rows(1, start=1000))
        gate.set()
        assert (await running)["y"].shape == (1, 3)  # a started request is not cut off
        await asyncio.sleep(0.05)
        assert model.batches == [1]  # the expired request never reached the model
        await batcher.stop()

    run(main())


def test_a_failing_request_fails_alone() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=20), "m"
        )
        good_a, bad, good_b = rows(2), {"x": -np.ones((1, 3))}, rows(3, start=50)
        results = await asyncio.gather(
            batcher.predict(good_a),
            batcher.predict(bad),
            batcher.predict(good_b),
            return_exceptions=True,
        )
        np.testing.assert_array_equal(results[0]["y"], good_a["x"] * 2)
        assert isinstance(results[1], ValueError)
        np.testing.assert_array_equal(results[2]["y"], good_b["x"] * 2)
        assert model.batches[0] == 6  # tried together first, then one by one
        await batcher.stop()

    run(main())


def test_incompatible_requests_are_batched_separately() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=20), "m"
        )
        narrow, wide = rows(2, width=3), rows(2, width=5)
        only_y = batcher.predict(rows(1), outputs=["y"])
        results = await asyncio.gather(batcher.predict(narrow), batcher.predict(wide), only_y)
        np.testing.assert_array_equal(results[0]["y"], narrow["x"] * 2)
        np.testing.assert_array_equal(results[1]["y"], wide["x"] * 2)
        assert list(results[2]) == ["y"]
        assert sorted(model.batches) == [1, 2, 2]
        await batcher.stop()

    run(main())


def test_outputs_that_are_not_per_row_fall_back_to_single_requests() -> None:
    async def summary(inputs, outputs=None, parameters=None):
        return {"mean": np.asarray(inputs["x"].mean())}

    async def main() -> None:
        batcher = AdaptiveBatcher(
            summary, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=20), "m"
        )
        a, b = rows(1), rows(2, start=10)
        results = await asyncio.gather(batcher.predict(a), batcher.predict(b))
        assert results[0]["mean"] == a["x"].mean() and results[1]["mean"] == b["x"].mean()
        await batcher.stop()

    run(main())


def test_stop_fails_queued_requests_with_503() -> None:
    async def main() -> None:
        model = FakeModel()
        batcher = AdaptiveBatcher(
            model.predict, BatchingPolicy(max_batch_size=8, max_batch_delay_ms=30_000), "m"
        )
        pending = asyncio.ensure_future(batcher.predict(rows(1)))
        await asyncio.sleep(0.01)
        await batcher.stop()
        with pytest.raises(Unavailable, match="unloading"):
            await pending

    run(main())
