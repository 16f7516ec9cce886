"""Loading: where predict runs is decided once (event loop or threads), failures stay with
their model, batching wraps the bound predict."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import numpy as np

from servekit.core.executor import Executor
from servekit.core.loader import ModelLoader
from servekit.core.registry import ModelRegistry
from servekit.observe.metrics import Metrics
from servekit.repository.local import scan_repository

THREAD_MODEL = textwrap.dedent(
    """
    import threading
    import time

    import numpy as np
    import servekit


    class WhereAmI(servekit.Model):
        inputs = [servekit.TensorSpec("x", "FP64", (-1, 2))]
        outputs = [servekit.TensorSpec("thread", "BYTES", (-1,))]

        def predict(self, inputs):
            time.sleep(self.parameters.get("sleep", 0))
            name = threading.current_thread().name
            return {"thread": np.array([name] * len(inputs["x"]), dtype=object)}
    """
)


def add_model(repo: Path, name: str, yaml: str = "") -> None:
    (repo / name).mkdir(parents=True)
    (repo / name / "model.py").write_text(THREAD_MODEL)
    (repo / name / "model.yaml").write_text(yaml)


def where_predict_runs(repo: Path) -> dict[str, str]:
    async def main() -> dict[str, str]:
        registry, executor = ModelRegistry(), Executor(2)
        await ModelLoader(registry, executor, Metrics()).load_all(scan_repository(repo))
        found = {}
        for handle in registry:
            assert handle.ready, handle.error
            result = await handle.predict({"x": np.zeros((1, 2))}, None, {})
            found[handle.name] = str(result["thread"][0])
        executor.shutdown()
        return found

    return asyncio.run(main())


def test_fast_sync_models_run_on_the_loop_and_slow_ones_in_threads(tmp_path: Path) -> None:
    add_model(tmp_path, "fast")
    add_model(tmp_path, "slow", "parameters: {sleep: 0.01}\n")
    add_model(tmp_path, "forced", "execution: threads\n")
    add_model(tmp_path, "inline", "execution: event_loop\nparameters: {sleep: 0.01}\n")
    threads = where_predict_runs(tmp_path)
    assert threads["fast"] == "MainThread"
    assert threads["slow"].startswith("servekit-model")
    assert threads["forced"].startswith("servekit-model")
    assert threads["inline"] == "MainThread"


def test_models_without_a_usable_signature_stay_in_threads(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "model.py").write_text(
        THREAD_MODEL.replace(
            'TensorSpec("x", "FP64", (-1, 2))', 'TensorSpec("x", "FP64", (-1, -1))'
        )
    )
    assert where_predict_runs(tmp_path)["open"].startswith("servekit-model")


def test_batching_wraps_the_bound_predict(tmp_path: Path) -> None:
    add_model(tmp_path, "batched", "batching: {max_batch_size: 4, max_batch_delay_ms: 1}\n")

    async def main() -> None:
        registry, executor = ModelRegistry(), Executor(2)
        await ModelLoader(registry, executor, Metrics()).load_all(scan_repository(tmp_path))
        handle = registry.get("batched")
        assert handle.batcher is not None and handle.predict == handle.batcher.predict
        results = await asyncio.gather(
            *(handle.predict({"x": np.zeros((1, 2))}, None, {}) for _ in range(6))
        )
        assert all(r["thread"].shape == (1,) for r in results)
        executor.shutdown()

    asyncio.run(main())


COUNTING_MODEL = textwrap.dedent(
    """
    import numpy as np
    import servekit


    class Counting(servekit.Model):
        inputs = [servekit.TensorSpec("x", "FP64", (-1, 2))]
        outputs = [servekit.TensorSpec("seen", "INT64", (-1,))]

        def load(self):
            self.calls = []

        def predict(self, inputs):
            x = inputs["x"]
            if (x < 0).any():
                raise ValueError("negative warm-up value")
            self.calls.append(x.tolist())
            return {"seen": np.full(len(x), len(self.calls))}
    """
)


def load_one(repo: Path):
    async def main():
        registry, executor = ModelRegistry(), Executor(2)
        await ModelLoader(registry, executor, Metrics()).load_all(scan_repository(repo))
        executor.shutdown()
        return registry.get("m")

    return asyncio.run(main())


def test_warmup_sample_runs_before_the_version_is_ready(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text(COUNTING_MODEL)
    (tmp_path / "m" / "warm.json").write_text('{"x": [[1.5, 2.5]]}')
    (tmp_path / "m" / "model.yaml").write_text("warmup: {sample: warm.json, repeat: 3}\n")
    handle = load_one(tmp_path)
    assert handle.ready
    calls = handle.runtime._model.calls
    assert calls[-3:] == [[[1.5, 2.5]]] * 3


def test_warmup_from_the_signature_by_default(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text(COUNTING_MODEL)
    (tmp_path / "m" / "model.yaml").write_text("warmup: {}\nexecution: threads\n")
    handle = load_one(tmp_path)
    assert handle.ready and handle.runtime._model.calls == [[[0.0, 0.0]]]


def test_a_version_that_fails_its_warmup_never_serves(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.py").write_text(COUNTING_MODEL)
    (tmp_path / "m" / "warm.json").write_text('{"x": [[-1, 0]]}')
    (tmp_path / "m" / "model.yaml").write_text("warmup: {sample: warm.json}\n")
    handle = load_one(tmp_path)
    assert handle.state.value == "FAILED"
    assert handle.error == "warm-up failed: ValueError: negative warm-up value"
    assert handle.predict is None


def test_a_model_that_refuses_the_timing_call_stays_in_threads_and_says_why(
    tmp_path: Path, caplog
) -> None:
    (tmp_path / "picky").mkdir()
    (tmp_path / "picky" / "model.py").write_text(
        THREAD_MODEL.replace(
            'time.sleep(self.parameters.get("sleep", 0))',
            'if not inputs["x"].any():\n                raise ValueError("all zeros")',
        )
    )

    async def main() -> str:
        registry, executor = ModelRegistry(), Executor(2)
        await ModelLoader(registry, executor, Metrics()).load_all(scan_repository(tmp_path))
        handle = registry.get("picky")
        assert handle.ready, handle.error
        result = await handle.predict({"x": np.ones((1, 2))}, None, {})
        executor.shutdown()
        return str(result["thread"][0])

    with caplog.at_level("INFO", logger="servekit.loader"):
        assert asyncio.run(main()).startswith("servekit-model")
    assert "picky: a timing call with zeros failed (ValueError: all zeros)" in caplog.text
