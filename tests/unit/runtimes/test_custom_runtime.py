from __future__ import annotations

import asyncio
import textwrap

import numpy as np
import pytest

from servekit.errors import ConfigError
from servekit.types import TensorSpec

SCALER = """
import numpy as np

import servekit


class Scaler(servekit.Model):
    inputs = [servekit.TensorSpec("input-0", "FP64", (-1, 2))]
    outputs = [servekit.TensorSpec("scaled", "FP64", (-1, 2))]

    def load(self):
        self.factor = float((self.path / "factor.txt").read_text()) * self.parameters["extra"]

    def predict(self, inputs):
        return {"scaled": inputs["input-0"] * self.factor}
"""

ASYNC_BARE_ARRAY = """
import servekit


class Negate(servekit.Model):
    async def predict(self, inputs):
        return -inputs["input-0"]
"""


def _write(folder, source: str) -> None:
    (folder / "model.py").write_text(textwrap.dedent(source))


def test_model_reads_its_folder_and_parameters(tmp_path, load_runtime):
    _write(tmp_path, SCALER)
    (tmp_path / "factor.txt").write_text("3")
    runtime = load_runtime("custom", tmp_path / "model.py", parameters={"extra": 2})

    result = runtime.predict({"input-0": np.array([[1.0, 2.0]])})

    np.testing.assert_array_equal(result["scaled"], [[6.0, 12.0]])
    assert runtime.signature().inputs == [TensorSpec("input-0", "FP64", (-1, 2))]
    assert runtime.signature().outputs == [TensorSpec("scaled", "FP64", (-1, 2))]
    runtime.unload()


def test_async_model_returning_an_array_gives_output_0(tmp_path, load_runtime):
    _write(tmp_path, ASYNC_BARE_ARRAY)
    runtime = load_runtime("custom", tmp_path / "model.py")

    result = asyncio.run(runtime.predict({"input-0": np.array([1, -2])}))

    np.testing.assert_array_equal(result["output-0"], [-1, 2])
    assert runtime.signature().inputs == []  # undeclared: the core passes inputs through


def test_two_model_classes_need_a_name(tmp_path, load_runtime):
    _write(tmp_path, SCALER + ASYNC_BARE_ARRAY)

    with pytest.raises(ConfigError, match="found 2"):
        load_runtime("custom", tmp_path / "model.py")
    runtime = load_runtime("custom", tmp_path / "model.py", parameters={"class": "Negate"})
    assert asyncio.run(runtime.predict({"input-0": np.array([3])}))["output-0"].tolist() == [-3]
