from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from servekit.types import TensorSpec

# TorchScript is deprecated in torch 2.13 (torch.jit.* emits DeprecationWarning) but it is the
# format this runtime serves: ignore exactly the torch.jit.script (building the test models) and
# torch.jit.load (in the runtime) messages, nothing else from torch.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.(load|script)` is deprecated:DeprecationWarning"
)


class TwoHeads(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(dim=1), x * 2


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"total": x.sum(dim=1), "largest": x.amax(dim=1)}


class Difference(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a - b


def _save(module: torch.nn.Module, path) -> None:
    torch.jit.script(module).save(str(path))


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_linear_matches_eager_module(tmp_path, load_runtime, restore_threads):
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 2)
    _save(linear, tmp_path / "model.pt")
    runtime = load_runtime("torch", tmp_path / "model.pt", parameters={"threads": 2})
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)

    result = runtime.predict({"input-0": X})

    with torch.no_grad():
        expected = linear(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(result["output-0"], expected, rtol=1e-6)
    assert torch.get_num_threads() == 2
    assert runtime.signature().inputs == [TensorSpec("input-0", "FP32", (-1, -1))]
    assert runtime.signature().outputs == [TensorSpec("output-0", "FP32", (-1, -1))]


def test_read_only_request_buffers_are_accepted(tmp_path, load_runtime, restore_threads):
    _save(TwoHeads(), tmp_path / "model.pt")
    runtime = load_runtime("torch", tmp_path / "model.pt")
    raw = np.arange(6, dtype=np.float32).tobytes()
    X = np.frombuffer(raw, dtype=np.float32).reshape(2, 3)  # as the REST/gRPC raw path gives

    result = runtime.predict({"input-0": X})

    np.testing.assert_array_equal(result["output-0"], [3.0, 12.0])


def test_tuple_outputs_are_numbered_and_filtered(tmp_path, load_runtime, restore_threads):
    _save(TwoHeads(), tmp_path / "model.pt")
    runtime = load_runtime("torch", tmp_path / "model.pt")
    X = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)

    result = runtime.predict({"input-0": X})

    assert set(result) == {"output-0", "output-1"}
    np.testing.assert_array_equal(result["output-0"], [3.0, 7.0])
    np.testing.assert_array_equal(result["output-1"], X * 2)
    assert set(runtime.predict({"input-0": X}, outputs=["output-1"])) == {"output-1"}


def test_dict_outputs_are_named_by_key(tmp_path, load_runtime, restore_threads):
    _save(Named(), tmp_path / "model.pt")
    declared = [TensorSpec("total", "FP32", (-1,)), TensorSpec("largest", "FP32", (-1,))]
    runtime = load_runtime("torch", tmp_path / "model.pt", outputs=declared)

    result = runtime.predict({"input-0": np.array([[1.0, 5.0]], dtype=np.float32)})

    assert result.keys() == {"total", "largest"}
    np.testing.assert_array_equal(result["largest"], [5.0])
    assert runtime.signature().outputs == declared


def test_several_inputs_go_in_declared_order(tmp_path, load_runtime, restore_threads):
    _save(Difference(), tmp_path / "model.pt")
    declared = [TensorSpec("a", "INT64", (-1,)), TensorSpec("b", "INT64", (-1,))]
    runtime = load_runtime("torch", tmp_path / "model.pt", inputs=declared)

    result = runtime.predict({"b": np.array([1, 2]), "a": np.array([10, 20])})

    np.testing.assert_array_equal(result["output-0"], [9, 18])
    assert result["output-0"].dtype == np.int64
    assert runtime.signature().inputs == declared


def test_module_imports_without_torch():
    # torch is imported in load(), so listing or resolving runtimes never pays for it.
    code = "import sys, servekit.runtimes.torch; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
