"""WorkerPoolRuntime with real processes: results, spreading, errors, loading and unloading."""

from __future__ import annotations

import asyncio
import time

import joblib
import numpy as np
import pytest
from pool_support import process_exists, run, write_model
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.errors import InvalidInput
from servekit.runtimes import ModelSpec, resolve_runtime
from servekit.runtimes.sklearn import SKLearnRuntime
from servekit.types import TensorSpec
from servekit.workers import WorkerPoolRuntime, default_instances

SCALER = """
import numpy as np

import servekit


class Scaler(servekit.Model):
    inputs = [servekit.TensorSpec("input-0", "FP64", (-1, 2))]
    outputs = [servekit.TensorSpec("scaled", "FP64", (-1, 2))]

    def load(self):
        self.factor = float((self.path / "factor.txt").read_text()) * self.parameters["extra"]

    async def predict(self, inputs):
        return {"scaled": inputs["input-0"] * self.factor}
"""


def test_sklearn_through_the_pool_equals_direct_prediction(tmp_path):
    X, y = load_iris(return_X_y=True)
    joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), tmp_path / "model.joblib")
    spec = ModelSpec(name="iris", version="1", path=tmp_path / "model.joblib")
    direct = resolve_runtime("sklearn")(spec)
    direct.load()
    expected = direct.predict({"input-0": X})

    async def scenario():
        pool = WorkerPoolRuntime(SKLearnRuntime, spec, 2)
        await pool.load()
        try:
            assert pool.signature() == direct.signature()
            assert pool.platform == "sklearn"
            got = await pool.predict({"input-0": X})
            only = await pool.predict({"input-0": X[:2]}, outputs=["predict"])
        finally:
            await pool.unload()
        assert set(got) == {"predict", "predict_proba"}
        np.testing.assert_array_equal(got["predict"], expected["predict"])
        np.testing.assert_array_equal(got["predict_proba"], expected["predict_proba"])
        assert set(only) == {"predict"}

    run(scenario)


def test_custom_model_with_async_hooks_parameters_and_signature(tmp_path):
    path = write_model(tmp_path, SCALER)
    (tmp_path / "factor.txt").write_text("3")
    spec = ModelSpec(name="scaler", version="2", path=path, parameters={"extra": 2})

    async def scenario():
        pool = WorkerPoolRuntime("custom", spec, 1)
        await pool.load()
        try:
            result = await pool.predict({"input-0": np.array([[1.0, 2.0]])})
            assert pool.signature().inputs == [TensorSpec("input-0", "FP64", (-1, 2))]
            assert pool.platform == "servekit_custom"
        finally:
            await pool.unload()
        np.testing.assert_array_equal(result["scaled"], [[6.0, 12.0]])

    run(scenario)


def test_tensors_of_every_kind_and_size_round_trip_exactly(probe_pool):
    rng = np.random.default_rng(0)
    big = rng.random((200_000, 8))
    cases = [
        np.array([[5.1, 3.5, 1.4, 0.2]]),
        big,
        big[::2, ::3],  # not contiguous
        np.asfortranarray(rng.random((300, 700))),
        rng.integers(0, 2**62, size=(50_000,), dtype=np.int64),
        rng.random((10, 10)).astype(">f4"),  # big-endian
        np.array([b"a", b"bc", "d\u00e9".encode()], dtype=object),
        np.zeros((0, 4)),
        np.array([[True, False]]),
    ]

    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            for array in cases:
                result = await pool.predict({"x": array})
                assert result["y"].dtype == array.dtype and result["y"].shape == array.shape
                np.testing.assert_array_equal(result["y"], array)
        finally:
            await pool.unload()

    run(scenario)


def test_outputs_kept_by_the_caller_are_not_overwritten_by_later_requests(probe_pool):
    first, second = np.full((100_000, 4), 1.0), np.full((100_000, 4), 2.0)

    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            kept = (await pool.predict({"x": first}))["y"]  # a view of shared memory
            later = (await pool.predict({"x": second}))["y"]
            grown = (await pool.predict({"x": np.full((400_000, 4), 3.0)}))["y"]
        finally:
            await pool.unload()
        assert (kept == 1.0).all() and (later == 2.0).all() and (grown == 3.0).all()
        kept[0, 0] = 5.0  # writable, as arrays from an in-process model are

    run(scenario)


MEMO = """
import servekit


class Memo(servekit.Model):
    '''Keeps each request's input and answers with the previous one.'''

    def load(self):
        self.previous = None

    def predict(self, inputs):
        previous, self.previous = self.previous, inputs["x"]
        return {"previous": previous if previous is not None else inputs["x"]}
"""


def test_inputs_kept_by_the_model_are_not_overwritten_by_later_requests(tmp_path):
    spec = ModelSpec(name="memo", version="1", path=write_model(tmp_path, MEMO))

    async def scenario():
        pool = WorkerPoolRuntime("custom", spec, 1)
        await pool.load()
        try:
            for value in (1.0, 2.0, 3.0):
                result = await pool.predict({"x": np.full((100_000, 4), value)})
                assert (result["previous"] == max(value - 1.0, 1.0)).all()
        finally:
            await pool.unload()

    run(scenario)


def test_concurrent_requests_spread_across_workers(probe_pool):
    async def scenario():
        pool = probe_pool(2)
        await pool.load()
        try:
            inputs = {"x": np.ones((1, 1)), "sleep": np.array([0.3])}
            started = time.monotonic()
            results = await asyncio.gather(*(pool.predict(inputs) for _ in range(4)))
            elapsed = time.monotonic() - started
            pids = pool.pids
        finally:
            await pool.unload()
        assert {int(r["pid"][0]) for r in results} == set(pids)
        assert len(set(pids)) == 2
        assert elapsed < 4 * 0.3  # two at a time, not one

    run(scenario)


def test_thread_caps_follow_the_model_parameter(probe_pool):
    async def scenario():
        pool = probe_pool(1, parameters={"threads": 3})
        await pool.load()
        try:
            result = await pool.predict({"x": np.ones(1)})
        finally:
            await pool.unload()
        assert result["threads"].tolist() == ["3"]

    run(scenario)


def test_model_exceptions_come_back_by_name_and_the_worker_keeps_serving(probe_pool):
    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            pids = pool.pids
            with pytest.raises(ValueError, match="negative input") as builtin:
                await pool.predict({"x": np.array([-1.0])})
            with pytest.raises(Exception, match="unlucky input") as custom:
                await pool.predict({"x": np.array([13.0])})
            with pytest.raises(InvalidInput, match="666 is not allowed"):
                await pool.predict({"x": np.array([666.0])})
            result = await pool.predict({"x": np.array([1.0])})
            assert pool.pids == pids
        finally:
            await pool.unload()
        assert type(custom.value).__name__ == "ModelBug"
        assert "raise ModelBug" in str(custom.value.__cause__)  # the worker's traceback
        assert "raise ValueError" in str(builtin.value.__cause__)
        assert int(result["pid"][0]) == pids[0]

    run(scenario)


UNPICKLABLE = """
import numpy as np

import servekit


class Odd(servekit.Model):
    def predict(self, inputs):
        if inputs["x"][0] > 0:
            return {"y": np.array([lambda: 1], dtype=object)}
        return {"y": inputs["x"]}
"""


def test_outputs_that_cannot_cross_are_a_model_error_not_a_crash(tmp_path):
    spec = ModelSpec(name="odd", version="1", path=write_model(tmp_path, UNPICKLABLE))

    async def scenario():
        pool = WorkerPoolRuntime("custom", spec, 1)
        await pool.load()
        try:
            pids = pool.pids
            with pytest.raises(Exception, match="pickle"):
                await pool.predict({"x": np.array([1.0])})
            result = await pool.predict({"x": np.array([-1.0])})
            assert pool.pids == pids
        finally:
            await pool.unload()
        assert result["y"].tolist() == [-1.0]

    run(scenario)


def test_load_failure_raises_the_workers_error_and_leaves_no_process(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"this is not a pickle")
    spec = ModelSpec(name="corrupt", version="1", path=tmp_path / "model.joblib")
    with pytest.raises(Exception) as in_process:
        SKLearnRuntime(spec).load()

    async def scenario():
        pool = WorkerPoolRuntime("sklearn", spec, 2)
        with pytest.raises(Exception) as failure:
            await pool.load()
        assert pool.zygote_pid is None and pool.pids == []
        return failure.value

    error = run(scenario)
    assert type(error) is type(in_process.value) and str(error) == str(in_process.value)
    assert "joblib" in str(error.__cause__)  # the traceback from the worker process


def test_unknown_runtime_fails_to_load_with_a_config_error(tmp_path):
    spec = ModelSpec(name="m", version="1", path=tmp_path)

    async def scenario():
        pool = WorkerPoolRuntime("no.such.module:Runtime", spec, 1)
        with pytest.raises(Exception, match="missing package") as failure:
            await pool.load()
        return failure.value

    assert type(run(scenario)).__name__ == "ConfigError"


def test_unload_ends_every_process(probe_pool):
    async def scenario():
        pool = probe_pool(2)
        await pool.load()
        pids = [*pool.pids, pool.zygote_pid]
        assert all(process_exists(pid) for pid in pids)
        await pool.unload()
        return pids

    pids = run(scenario)
    assert not any(process_exists(pid) for pid in pids)


def test_unload_fails_requests_still_running(probe_pool):
    async def scenario():
        pool = probe_pool(1, stop_grace=0.2)
        await pool.load()
        pids = [*pool.pids, pool.zygote_pid]
        request = asyncio.ensure_future(pool.predict({"x": np.ones(1), "sleep": np.array([5])}))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await pool.unload()
        with pytest.raises(Exception, match="unloaded"):
            await request
        assert time.monotonic() - started < 3
        return pids

    pids = run(scenario)
    assert not any(process_exists(pid) for pid in pids)


def test_a_cancelled_request_does_not_lose_its_worker(probe_pool):
    async def scenario():
        pool = probe_pool(1)
        await pool.load()
        try:
            slow = asyncio.ensure_future(pool.predict({"x": np.ones(1), "sleep": np.array([0.3])}))
            await asyncio.sleep(0.1)
            slow.cancel()
            result = await asyncio.wait_for(pool.predict({"x": np.array([2.0])}), 5)
        finally:
            await pool.unload()
        assert result["y"].tolist() == [2.0]

    run(scenario)


def test_instances_must_be_positive_and_default_to_the_cpus(tmp_path):
    with pytest.raises(Exception, match="at least 1"):
        WorkerPoolRuntime("custom", ModelSpec("m", "1", tmp_path), 0)
    assert default_instances() >= 1
