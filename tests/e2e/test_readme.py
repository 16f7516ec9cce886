"""The README's examples run as written (with the test server's ports)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from servekit.runtimes import ModelSpec, resolve_runtime
from servekit.testing import ServerProcess

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.DOTALL)
CLIENT_BASH = [
    code
    for lang, code in BLOCKS
    if lang == "bash" and code.lstrip().startswith(("curl", "servekit predict"))
]
CLIENT_PYTHON = [code for lang, code in BLOCKS if lang == "python" and "client" in code]
CUSTOM_MODEL = next(code for lang, code in BLOCKS if lang == "python" and "servekit.Model" in code)


def with_ports(code: str, server) -> str:
    """Point the examples at the test server (the CLI's default URL is port 8080)."""
    lines = [
        line + " --url http://localhost:8080"
        if line.startswith("servekit predict") and "--url" not in line
        else line
        for line in code.splitlines()
    ]
    return (
        "\n".join(lines)
        .replace("localhost:8080", f"127.0.0.1:{server.http_port}")
        .replace("127.0.0.1:8080", f"127.0.0.1:{server.http_port}")
        .replace("localhost:8081", server.grpc_target)
    )


def test_readme_has_examples_to_run() -> None:
    assert len(CLIENT_BASH) >= 4 and len(CLIENT_PYTHON) >= 2


@pytest.mark.parametrize("code", CLIENT_BASH, ids=[f"bash-{i}" for i in range(len(CLIENT_BASH))])
def test_readme_shell_examples(code: str, server, example_repo, tmp_path: Path) -> None:
    if "/v2/repository" in code:  # control examples unload models: give them their own server
        repo = tmp_path / "models"
        shutil.copytree(example_repo[0], repo)
        with ServerProcess(repo) as own:
            run_shell(code, own, tmp_path)
    else:
        run_shell(code, server, tmp_path)


def run_shell(code: str, server, tmp_path: Path) -> None:
    (tmp_path / "request.json").write_text(json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
    bin_dir = Path(sys.executable).parent
    script = "set -euo pipefail\n" + with_ports(code, server)
    result = subprocess.run(
        ["bash", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", "TOKEN": ""},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert '"error"' not in result.stdout


@pytest.mark.parametrize(
    "code", CLIENT_PYTHON, ids=[f"python-{i}" for i in range(len(CLIENT_PYTHON))]
)
def test_readme_python_client_examples(code: str, server) -> None:
    result = subprocess.run(
        [sys.executable, "-c", with_ports(code, server)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d", result.stdout)


def test_readme_custom_model(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(CUSTOM_MODEL)
    runtime = resolve_runtime("custom")(ModelSpec("doubler", "1", tmp_path / "model.py"))
    runtime.load()
    result = runtime.predict({"x": np.array([1.0, 2.5])})
    np.testing.assert_array_equal(result["y"], [2.0, 5.0])
    assert [s.name for s in runtime.signature().inputs] == ["x"]
