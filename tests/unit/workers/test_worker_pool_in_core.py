"""The pool is just a Runtime to the core: DataPlane answers, errors and statuses are the same
as for a model in the server process."""

from __future__ import annotations

import asyncio
import os
import signal

import numpy as np
import pytest
from pool_support import busy_worker, eventually, run

from servekit.core.dataplane import DataPlane
from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry
from servekit.errors import ErrorCode, InferenceError, Unavailable
from servekit.observe.metrics import Metrics
from servekit.types import InferenceRequest, Tensor
from servekit.types.inference import RequestContext


def request(x: np.ndarray, **extra: np.ndarray) -> InferenceRequest:
    tensors = {"x": x, **extra}
    return InferenceRequest(inputs=[Tensor.from_array(n, a) for n, a in tensors.items()])


def test_dataplane_serves_a_pooled_model_like_any_other(probe_pool):
    async def scenario():
        pool = probe_pool(2)
        await pool.load()
        registry = ModelRegistry()
        handle = ModelHandle("probe", "1", pool.platform, state=ModelState.READY)
        handle.runtime, handle.predict = pool, pool.predict
        registry.add(handle)
        dataplane = DataPlane(registry, Metrics())
        context = RequestContext(protocol="test")
        folder = pool.spec.path.parent
        try:
            ok = await dataplane.infer("probe", None, request(np.array([[1.5, 2.5]])), context)
            with pytest.raises(InferenceError) as failed:
                await dataplane.infer("probe", None, request(np.array([-1.0])), context)
            slow = request(np.ones(1), sleep=np.array([30.0]))
            crash = asyncio.ensure_future(dataplane.infer("probe", "1", slow, context))
            await eventually(lambda: busy_worker(folder) is not None)
            os.kill(busy_worker(folder), signal.SIGKILL)
            with pytest.raises(Unavailable) as crashed:
                await crash
        finally:
            await pool.unload()
        outputs = {t.name: t for t in ok.outputs}
        assert outputs["y"].data.tolist() == [[1.5, 2.5]]
        assert outputs["pid"].data[0] != os.getpid()  # a worker process answered
        assert failed.value.code is ErrorCode.INTERNAL
        assert str(failed.value) == (
            "model 'probe' version '1' failed: ValueError (details in the server log)"
        )
        assert crashed.value.code is ErrorCode.UNAVAILABLE and "model 'probe'" in str(crashed.value)

    run(scenario)
