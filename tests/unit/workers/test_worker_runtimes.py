"""Every bundled runtime survives the fork: served from two workers, each example model and a
TorchScript module answer exactly as they do in the server process."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
from pool_support import run

from servekit.repository.local import scan_repository
from servekit.runtimes import ModelSpec, resolve_runtime
from servekit.types.tensors import NUMPY_DTYPES
from servekit.workers import WorkerPoolRuntime

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
TORCH_MODULE = """
import sys
import torch

class Heads(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.sum(dim=1), torch.tanh(x) * 2

torch.jit.script(Heads()).save(sys.argv[1])
"""


def example_specs(root: Path) -> list[tuple[str, ModelSpec, np.ndarray]]:
    module_spec = importlib.util.spec_from_file_location("train", EXAMPLES / "train_models.py")
    assert module_spec and module_spec.loader
    train = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(train)
    built = train.build_repository(root)
    found = []
    for source in scan_repository(root):
        version = source.versions[-1]
        declared = [t.to_spec() for t in source.config.inputs or []] or None
        spec = ModelSpec(
            source.name, version.version, version.artifact, dict(source.config.parameters), declared
        )
        found.append((version.format, spec, built[source.name]["X"]))
    return found


def test_every_runtime_answers_from_workers_as_in_process(tmp_path):
    cases = example_specs(tmp_path / "models")
    pt, script = tmp_path / "heads.pt", tmp_path / "make_heads.py"
    script.write_text(TORCH_MODULE)
    # Saved by a separate interpreter: TorchScript's deprecation warnings stay out of this one.
    subprocess.run([sys.executable, str(script), str(pt)], check=True, timeout=120)
    cases.append(("torch", ModelSpec("heads", "1", pt), np.random.default_rng(0).random((7, 3))))
    assert {fmt for fmt, _, _ in cases} >= {"sklearn", "xgboost", "lightgbm", "onnx", "custom"}

    async def scenario():
        results = []
        for fmt, spec, X in cases:
            pool = WorkerPoolRuntime(fmt, spec, 2)
            await pool.load()
            try:
                first = pool.signature().inputs[0]
                inputs = {first.name: X[:20].astype(NUMPY_DTYPES[first.datatype])}
                answers = await asyncio.gather(*(pool.predict(inputs) for _ in range(4)))
            finally:
                await pool.unload()
            results.append((fmt, spec, inputs, answers))
        return results

    results = run(scenario, timeout=240)
    for fmt, spec, inputs, answers in results:
        if fmt == "torch":
            continue  # compared with numpy below: torch stays out of this process
        direct = resolve_runtime(fmt)(spec)
        direct.load()
        expected = direct.predict(inputs)
        for answer in answers:
            assert set(answer) == set(expected), fmt
            for key in expected:
                np.testing.assert_array_equal(answer[key], expected[key], err_msg=fmt)
    torch_answers = next(a for f, _, _, a in results if f == "torch")
    x = next(i for f, _, i, _ in results if f == "torch")["input-0"]
    for answer in torch_answers:
        np.testing.assert_allclose(answer["output-0"], x.sum(axis=1), rtol=1e-6)
        np.testing.assert_allclose(answer["output-1"], np.tanh(x) * 2, rtol=1e-6)
