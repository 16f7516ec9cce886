"""The loader freezes the heap after a load (full collections stop rescanning it) and thaws it
at an unload, so an unloaded model's reference cycles are still collected."""

from __future__ import annotations

import asyncio
import gc
import sys
import textwrap
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from servekit.core.executor import Executor
from servekit.core.heap import HeapFreezer
from servekit.core.loader import ModelLoader
from servekit.core.registry import ModelRegistry
from servekit.observe.metrics import Metrics
from servekit.repository.local import scan_repository

CYCLIC_MODEL = textwrap.dedent(
    """
    import numpy as np
    import servekit

    LOADED = []  # the test empties it, so that only the cycle keeps the node alive


    class Node:
        pass


    class Cyclic(servekit.Model):
        inputs = [servekit.TensorSpec("x", "FP64", (-1, 2))]
        outputs = [servekit.TensorSpec("y", "FP64", (-1,))]

        def load(self):
            self.node = Node()
            self.node.model = self  # a cycle: only the cyclic collector frees it
            LOADED.append(self.node)

        def predict(self, inputs):
            return {"y": inputs["x"].sum(axis=1)}
    """
)


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # other tests start from an ordinary heap


def test_disabled_freezer_leaves_the_heap_alone() -> None:
    HeapFreezer(enabled=False).after_load()
    assert gc.get_freeze_count() == 0


def test_after_load_freezes_what_exists_and_collects_garbage_first() -> None:
    class Box:
        pass

    garbage = Box()
    garbage.me = garbage  # type: ignore[attr-defined]
    ref = weakref.ref(garbage)
    del garbage
    HeapFreezer().after_load()
    assert ref() is None, "cyclic garbage must not be frozen forever"
    assert gc.get_freeze_count() > 1000


def test_loader_freezes_after_load_and_an_unloaded_models_cycles_are_collected(
    tmp_path: Path,
) -> None:
    (tmp_path / "cyclic").mkdir()
    (tmp_path / "cyclic" / "model.py").write_text(CYCLIC_MODEL)
    (tmp_path / "cyclic" / "model.yaml").write_text("")

    async def main() -> None:
        registry, executor = ModelRegistry(), Executor(1)
        loader = ModelLoader(registry, executor, Metrics(), HeapFreezer())
        await loader.load_all(scan_repository(tmp_path))
        (handle,) = list(registry)
        assert handle.ready, handle.error
        assert gc.get_freeze_count() > 0
        result = await handle.predict({"x": np.ones((2, 2))}, None, {})
        assert result["y"].tolist() == [2.0, 2.0]

        model = handle.runtime._model  # type: ignore[union-attr]
        node = weakref.ref(model.node)
        sys.modules[type(model).__module__].LOADED.clear()
        del model
        assert node() is not None
        await loader.unload(handle)
        executor.shutdown()
        assert node() is None, "the unloaded model's cycle was frozen and leaked"

    asyncio.run(main())
