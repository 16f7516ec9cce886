"""Repositories from a real S3-compatible server and a real HTTP server, each a separate process.

The S3 server is moto's standalone server with request recording on, so the tests count what the
store actually served (object GETs), not only what our own counters say.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np
import pytest

pytest.importorskip("s3fs", reason="the s3 extra is not installed")
boto3 = pytest.importorskip("boto3", reason="moto[server] is not installed")
pytest.importorskip("moto.server", reason="moto[server] is not installed")
joblib = pytest.importorskip("joblib")
datasets = pytest.importorskip("sklearn.datasets")
linear_model = pytest.importorskip("sklearn.linear_model")

from servekit.repository import scan_repository  # noqa: E402
from servekit.storage import StorageError, StorageOptions, StorageStats, materialize  # noqa: E402
from servekit.testing import ServerProcess  # noqa: E402
from servekit.testing.server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODEL_YAML = """\
inputs:
  - {name: input-0, datatype: FP32, shape: [-1, 4]}
outputs:
  - {name: predict, datatype: INT64, shape: [-1]}
"""
# A child process is a server restart: nothing shared with the test process but the cache folder.
CHILD = """
import json, sys, time
from servekit.storage import StorageOptions, StorageStats, materialize
endpoint, uri, cache, start_at = sys.argv[1:]
time.sleep(max(0.0, float(start_at) - time.time()))
stats = StorageStats()
path = materialize(uri, cache, StorageOptions(endpoint_url=endpoint, key="k", secret="s"),
                   stats=stats)
print(json.dumps({"path": str(path), "downloads": stats.downloads, "reused": stats.reused}))
"""


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="module")
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process the module starts; all terminated (then killed) however the tests end."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start(command: list[str], port: int, log: Path, background: list, env: dict | None = None):
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    background.append(process)
    wait_for_port(port, process, log, timeout=30)
    return process


@dataclass
class S3Server:
    endpoint: str
    recording: Path

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )

    def options(self) -> StorageOptions:
        return StorageOptions(endpoint_url=self.endpoint, key="k", secret="s")

    def object_gets(self, bucket: str) -> list[str]:
        """Keys of ``bucket`` whose bodies the server sent (listings excluded), in order."""
        keys = []
        for line in self.recording.read_text().splitlines():
            entry = json.loads(line)
            url = urlsplit(entry["url"])
            _, name, key = (url.path.split("/", 2) + ["", ""])[:3]
            if entry["method"] == "GET" and name == bucket and key and "list-type" not in url.query:
                keys.append(unquote(key))
        return keys


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory, background: list) -> S3Server:
    folder = tmp_path_factory.mktemp("moto")
    recording = folder / "requests.jsonl"
    recording.touch()
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    env = {"MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(recording)}
    start(command, port, folder / "moto.log", background, env)
    return S3Server(f"http://127.0.0.1:{port}", recording)


def train(c: float = 1.0) -> object:
    x, y = datasets.load_iris(return_X_y=True)
    return linear_model.LogisticRegression(C=c, max_iter=1000).fit(x, y)


@pytest.fixture(scope="module")
def local_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("source") / "repo"
    (repo / "iris" / "1").mkdir(parents=True)
    (repo / "iris" / "model.yaml").write_text(MODEL_YAML)
    joblib.dump(train(), repo / "iris" / "1" / "model.joblib")
    return repo


@pytest.fixture
def bucket(s3: S3Server, local_repo: Path) -> str:
    """A fresh bucket holding ``repo/`` (the iris repository), so tests share no objects."""
    name = f"models-{uuid.uuid4().hex[:12]}"
    client = s3.client()
    client.create_bucket(Bucket=name)
    for path in sorted(p for p in local_repo.rglob("*") if p.is_file()):
        key = f"repo/{path.relative_to(local_repo).as_posix()}"
        client.put_object(Bucket=name, Key=key, Body=path.read_bytes())
    return name


def run_children(s3: S3Server, uri: str, cache: Path, count: int) -> list[dict]:
    # Several children start together once all have imported, so that they really race.
    start_at = str(time.time() + (2.0 if count > 1 else 0.0))
    args = [s3.endpoint, uri, str(cache), start_at]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(count)
    ]
    results = []
    for child in children:
        try:
            out, err = child.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
        assert child.returncode == 0, err.decode()
        results.append(json.loads(out))
    return results


def files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# --- S3 ---------------------------------------------------------------------------------------


def test_serve_from_s3(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    folder = materialize(f"s3://{bucket}/repo", tmp_path / "cache", s3.options())
    assert files(folder) == ["iris/1/model.joblib", "iris/model.yaml"]
    [model] = scan_repository(folder)
    assert model.name == "iris" and model.versions[0].format == "sklearn"
    x = datasets.load_iris().data[:5].astype(np.float32)
    expected = joblib.load(model.versions[0].artifact).predict(x)
    assert expected.tolist() == train().predict(x).tolist()

    with ServerProcess(folder, env={"OMP_NUM_THREADS": "1"}) as server:
        body = {"inputs": [{"name": "input-0", "shape": [5, 4], "datatype": "FP32",
                            "data": x.ravel().tolist()}]}  # fmt: skip
        response = httpx.post(f"{server.http_url}/v2/models/iris/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    [predict] = [o for o in response.json()["outputs"] if o["name"] == "predict"]
    assert predict["data"] == expected.tolist()


def test_server_serves_an_s3_uri_and_reuses_its_cache(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """`servekit serve s3://…` end to end: settings reach storage, a restart downloads nothing."""
    env = {
        "SERVEKIT_STORAGE_ENDPOINT_URL": s3.endpoint,
        "SERVEKIT_STORAGE_KEY": "k",
        "SERVEKIT_STORAGE_SECRET": "s",
        "SERVEKIT_STORAGE_CACHE_DIR": str(tmp_path / "cache"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "OMP_NUM_THREADS": "1",
    }
    x = datasets.load_iris().data[:3].astype(np.float32)
    body = {"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP32",
                        "data": x.ravel().tolist()}]}  # fmt: skip

    def serve_once() -> list:
        with ServerProcess(f"s3://{bucket}/repo", env=env) as server:
            response = httpx.post(f"{server.http_url}/v2/models/iris/infer", json=body,
                                  timeout=30)  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()["outputs"][0]["data"]

    first = serve_once()
    gets_after_start = len(s3.object_gets(bucket))
    second = serve_once()  # a restart on the same cache
    assert first == second == train().predict(x).tolist()
    assert gets_after_start == 2  # model.yaml and the artifact, downloaded once
    assert len(s3.object_gets(bucket)) == gets_after_start  # the restart read only the cache


def test_credentials_and_endpoint_from_the_environment(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing in StorageOptions: botocore's usual variables reach an S3-compatible store."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(name, value)
    folder = materialize(f"s3://{bucket}/repo", tmp_path / "cache", StorageOptions())
    assert files(folder) == ["iris/1/model.joblib", "iris/model.yaml"]


def test_restart_reuses_the_cache(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    uri, cache = f"s3://{bucket}/repo", tmp_path / "cache"
    [cold] = run_children(s3, uri, cache, 1)
    assert cold["downloads"] == 2
    artifact = Path(cold["path"]) / "iris/1/model.joblib"
    before = artifact.stat()
    gets_before = len(s3.object_gets(bucket))

    [warm] = run_children(s3, uri, cache, 1)  # a restart: a new process, same cache folder
    assert warm == {"path": cold["path"], "downloads": 0, "reused": 2}
    assert len(s3.object_gets(bucket)) == gets_before  # the store sent no object body
    after = artifact.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_changed_object_is_downloaded_again(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    uri, cache = f"s3://{bucket}/repo", tmp_path / "cache"
    first = materialize(uri, cache, s3.options())
    buffer = io.BytesIO()
    joblib.dump(train(c=0.01), buffer)
    s3.client().put_object(Bucket=bucket, Key="repo/iris/1/model.joblib", Body=buffer.getvalue())
    gets_before = len(s3.object_gets(bucket))

    stats = StorageStats()
    second = materialize(uri, cache, s3.options(), stats=stats)
    assert second != first
    assert stats.downloaded == [f"s3://{bucket}/repo/iris/1/model.joblib"]
    assert s3.object_gets(bucket)[gets_before:] == ["repo/iris/1/model.joblib"]
    assert (second / "iris/1/model.joblib").read_bytes() == buffer.getvalue()


def test_concurrent_first_requests_download_once(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    uri, cache = f"s3://{bucket}/repo", tmp_path / "cache"
    stats = StorageStats()
    barrier = threading.Barrier(8)
    results: list[Path] = []
    errors: list[BaseException] = []

    def caller() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(materialize(uri, cache, s3.options(), stats=stats))
        except BaseException as exc:  # reported below, with the thread's own traceback
            errors.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors and len(results) == 8 and len(set(results)) == 1
    assert stats.downloads == 2 and stats.reused == 7 * 2
    assert sorted(s3.object_gets(bucket)) == ["repo/iris/1/model.joblib", "repo/iris/model.yaml"]


def test_concurrent_processes_download_once(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    results = run_children(s3, f"s3://{bucket}/repo", tmp_path / "cache", 4)
    assert len({r["path"] for r in results}) == 1
    assert sum(r["downloads"] for r in results) == 2
    assert sorted(s3.object_gets(bucket)) == ["repo/iris/1/model.joblib", "repo/iris/model.yaml"]


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def repo_archive(local_repo: Path) -> bytes:
    return tar_gz(
        {p.relative_to(local_repo).as_posix(): p.read_bytes() for p in local_repo.rglob("*.*")}
    )


def test_s3_archive_is_unpacked(
    s3: S3Server, bucket: str, local_repo: Path, tmp_path: Path
) -> None:
    client = s3.client()
    client.put_object(Bucket=bucket, Key="dist/repo.tar.gz", Body=repo_archive(local_repo))
    client.put_object(Bucket=bucket, Key="dist/evil.tar.gz", Body=tar_gz({"../evil": b"x"}))
    folder = materialize(f"s3://{bucket}/dist/repo.tar.gz", tmp_path / "cache", s3.options())
    assert [m.name for m in scan_repository(folder)] == ["iris"]
    with pytest.raises(StorageError, match=r"evil.tar.gz: refusing to unpack archive"):
        materialize(f"s3://{bucket}/dist/evil.tar.gz", tmp_path / "cache", s3.options())
    assert not (tmp_path / "evil").exists()


def test_missing_prefix_names_the_uri(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=rf"s3://{bucket}/nope: not found"):
        materialize(f"s3://{bucket}/nope", tmp_path / "cache", s3.options())


# --- HTTP -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, local_repo: Path, background: list) -> str:
    """``python -m http.server`` serving an archive, a single artifact and an evil archive."""
    root = tmp_path_factory.mktemp("web")
    (root / "repo.tar.gz").write_bytes(repo_archive(local_repo))
    (root / "iris.joblib").write_bytes((local_repo / "iris/1/model.joblib").read_bytes())
    (root / "evil.zip").write_bytes(b"PK-not-really")
    (root / "slip.tgz").write_bytes(tar_gz({"a/../../evil": b"x"}))
    port = free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    start([*command, "--directory", str(root)], port, root.parent / "http.log", background)
    return f"http://127.0.0.1:{port}"


def test_http_archive_is_unpacked_and_reused(web: str, tmp_path: Path) -> None:
    first = materialize(f"{web}/repo.tar.gz", tmp_path / "cache")
    assert files(first) == ["iris/1/model.joblib", "iris/model.yaml"]
    stats = StorageStats()
    assert materialize(f"{web}/repo.tar.gz", tmp_path / "cache", stats=stats) == first
    assert stats.downloads == 0  # Last-Modified + size identify the content


def test_http_single_artifact(web: str, tmp_path: Path) -> None:
    folder = materialize(f"{web}/iris.joblib", tmp_path / "cache")
    assert files(folder) == ["iris/iris.joblib"]
    [model] = scan_repository(folder)
    assert model.name == "iris" and model.versions[0].format == "sklearn"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("slip.tgz", r"slip.tgz: refusing to unpack archive: member 'a/../../evil'"),
        ("evil.zip", r"evil.zip: cannot unpack archive"),
        ("missing.joblib", r"missing.joblib: not found"),
    ],
)
def test_http_failures_name_the_uri(web: str, tmp_path: Path, name: str, match: str) -> None:
    with pytest.raises(StorageError, match=match):
        materialize(f"{web}/{name}", tmp_path / "cache")
    leftovers = [
        p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "locks" not in p.parts
    ]
    assert leftovers == []
