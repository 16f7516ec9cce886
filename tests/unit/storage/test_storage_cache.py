"""The cache behind fsspec stores, exercised with an in-memory filesystem (one per test)."""

from __future__ import annotations

import asyncio
import io
import tarfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from servekit.repository import scan_repository
from servekit.storage import (
    StorageError,
    StorageOptions,
    StorageRegistry,
    StorageStats,
    default_registry,
    materialize,
    materialize_async,
    uri_scheme,
)
from servekit.storage.cache import content_key, digest
from servekit.storage.locks import file_lock
from servekit.storage.remote import FsspecBackend, no_kwargs

REPO = {
    "/repo/iris/model.yaml": b"parameters: {}\n",
    "/repo/iris/1/model.joblib": b"version one weights",
}


@pytest.fixture
def memfs() -> type[MemoryFileSystem]:
    """A MemoryFileSystem subclass with its own store, so tests share nothing."""

    class Isolated(MemoryFileSystem):
        store: dict = {}  # fsspec keeps the store on the class
        pseudo_dirs = [""]

    fs = Isolated(skip_instance_cache=True)
    fs.pipe(REPO)
    return Isolated


def registry_for(fs_class: type[MemoryFileSystem]) -> StorageRegistry:
    def factory(scheme: str, **kwargs: Any) -> MemoryFileSystem:
        return fs_class(skip_instance_cache=True)

    return StorageRegistry({"memory": FsspecBackend(None, no_kwargs, filesystem=factory)})


def sync(
    fs_class: type[MemoryFileSystem],
    cache: Path,
    uri: str = "memory://repo",
    options: StorageOptions | None = None,
) -> tuple[Path, StorageStats]:
    stats = StorageStats()
    path = materialize(uri, cache, options, stats=stats, registry=registry_for(fs_class))
    return path, stats


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_tree_becomes_a_scannable_snapshot(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    path, stats = sync(memfs, tmp_path)
    assert files_under(path) == ["iris/1/model.joblib", "iris/model.yaml"]
    assert (path / "iris/1/model.joblib").read_bytes() == b"version one weights"
    assert stats.downloads == 2 and stats.reused == 0
    [model] = scan_repository(path)
    assert model.name == "iris" and model.versions[0].format == "sklearn"
    assert not list((tmp_path / "tmp").iterdir())


def test_second_sync_reuses_every_object(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    first, _ = sync(memfs, tmp_path)
    inode = (first / "iris/1/model.joblib").stat().st_ino
    second, stats = sync(memfs, tmp_path)
    assert second == first
    assert stats.downloads == 0 and stats.reused == 2
    assert (second / "iris/1/model.joblib").stat().st_ino == inode


def test_changed_object_is_downloaded_alone(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    first, _ = sync(memfs, tmp_path)
    memfs(skip_instance_cache=True).pipe("/repo/iris/1/model.joblib", b"version two, longer")
    second, stats = sync(memfs, tmp_path)
    assert second != first
    assert stats.downloaded == ["memory:///repo/iris/1/model.joblib"] and stats.reused == 1
    assert (second / "iris/1/model.joblib").read_bytes() == b"version two, longer"
    assert (first / "iris/1/model.joblib").read_bytes() == b"version one weights"  # kept


def test_unchanged_files_keep_their_stat_across_snapshots(
    memfs: type[MemoryFileSystem], tmp_path: Path
) -> None:
    """The repository scan fingerprints (relative path, size, mtime): an unchanged model must look
    unchanged in a new snapshot, or every remote change would reload every model."""
    first, _ = sync(memfs, tmp_path)
    memfs(skip_instance_cache=True).pipe("/repo/other/1/model.joblib", b"another model")
    second, _ = sync(memfs, tmp_path)
    assert second != first
    for name in ("iris/model.yaml", "iris/1/model.joblib"):
        old, new = (first / name).stat(), (second / name).stat()
        assert (old.st_size, old.st_mtime_ns) == (new.st_size, new.st_mtime_ns)
    before = {m.name: [v.fingerprint for v in m.versions] for m in scan_repository(first)}
    after = {m.name: [v.fingerprint for v in m.versions] for m in scan_repository(second)}
    assert after["iris"] == before["iris"]


def test_content_key_prefers_the_stores_identity() -> None:
    etag = content_key("s3|b/k", {"ETag": '"abc"', "LastModified": 1, "size": 3})
    assert etag == content_key("s3|b/k", {"ETag": '"abc"', "LastModified": 2, "size": 3})
    assert etag != content_key("s3|b/k", {"ETag": '"abd"', "size": 3})
    assert etag != content_key("s3|other", {"ETag": '"abc"', "size": 3})
    when = datetime(2026, 1, 1, tzinfo=UTC)
    by_time = content_key("m|k", {"created": when, "size": 3})
    assert by_time == content_key("m|k", {"created": when.timestamp(), "size": 3})
    assert by_time != content_key("m|k", {"created": when, "size": 4})
    assert content_key("m|k", {"size": 3}) is None


def test_without_identity_content_is_hashed(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    class Anonymous(memfs):  # type: ignore[misc, valid-type]
        def info(self, path: str, **kwargs: Any) -> dict:
            return {k: v for k, v in super().info(path, **kwargs).items() if k != "created"}

        def find(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
            found = super().find(path, detail=detail, **kwargs)
            if not detail:
                return found
            return {p: {k: v for k, v in e.items() if k != "created"} for p, e in found.items()}

    first, _ = sync(Anonymous, tmp_path)
    second, stats = sync(Anonymous, tmp_path)
    assert stats.downloads == 2  # nothing to compare without downloading...
    assert second == first  # ...but the same bytes give the same snapshot


class FailingRead(io.BytesIO):
    """Delivers one block, then the connection "drops"."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise ConnectionResetError("connection reset by peer")
        return super().read(size)


def test_failed_download_leaves_no_partial_files(
    memfs: type[MemoryFileSystem], tmp_path: Path
) -> None:
    class Flaky(memfs):  # type: ignore[misc, valid-type]
        blocksize = 4

        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if "r" in mode and path.endswith(".joblib"):
                return FailingRead(self.cat_file(path))
            return super()._open(path, mode, **kwargs)

    with pytest.raises(StorageError, match=r"memory://repo: ConnectionResetError"):
        sync(Flaky, tmp_path)
    assert not (tmp_path / "objects").exists() or files_under(tmp_path / "objects") == []
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not (tmp_path / "snapshots").exists() and not (tmp_path / "refs").exists()
    path, stats = sync(memfs, tmp_path)  # the store recovers: a clean, complete sync
    assert stats.downloads == 2 and files_under(path) == ["iris/1/model.joblib", "iris/model.yaml"]


def test_short_download_is_refused(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    class Short(memfs):  # type: ignore[misc, valid-type]
        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if "r" in mode:
                return io.BytesIO(self.cat_file(path)[:-1])
            return super()._open(path, mode, **kwargs)

    with pytest.raises(StorageError, match="bytes, expected"):
        sync(Short, tmp_path)
    assert not (tmp_path / "objects").exists()


def test_concurrent_callers_download_once(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    class Slow(memfs):  # type: ignore[misc, valid-type]
        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            time.sleep(0.05)  # widen the window in which a second caller could start a download
            return super()._open(path, mode, **kwargs)

    stats = StorageStats()
    barrier = threading.Barrier(8)
    results: list[Path] = []

    def caller() -> None:
        barrier.wait(timeout=10)
        results.append(
            materialize("memory://repo", tmp_path, stats=stats, registry=registry_for(Slow))
        )

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 8 and len(set(results)) == 1
    assert stats.downloads == 2 and stats.reused == 7 * 2


def test_stale_copy_only_when_asked(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    good, _ = sync(memfs, tmp_path)

    class Down(memfs):  # type: ignore[misc, valid-type]
        def info(self, path: str, **kwargs: Any) -> dict:
            raise ConnectionRefusedError("connection refused")

    with pytest.raises(StorageError, match="memory://repo: ConnectionRefusedError"):
        sync(Down, tmp_path)
    assert sync(Down, tmp_path, options=StorageOptions(use_stale_on_error=True))[0] == good


def test_object_key_escaping_the_root_is_refused(
    memfs: type[MemoryFileSystem], tmp_path: Path
) -> None:
    memfs(skip_instance_cache=True).pipe("/repo/iris/../../evil", b"x")
    with pytest.raises(StorageError, match=r"refusing object 'iris/\.\./\.\./evil'"):
        sync(memfs, tmp_path)


def test_single_artifact_becomes_a_one_model_repository(
    memfs: type[MemoryFileSystem], tmp_path: Path
) -> None:
    memfs(skip_instance_cache=True).pipe("/models/iris.joblib", b"weights")
    path, _ = sync(memfs, tmp_path, "memory://models/iris.joblib")
    assert files_under(path) == ["iris/iris.joblib"]
    assert [m.name for m in scan_repository(path)] == ["iris"]


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_is_unpacked_once(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    archive = tar_gz({k.removeprefix("/repo/"): v for k, v in REPO.items()})
    memfs(skip_instance_cache=True).pipe("/dist/repo.tar.gz", archive)
    first, stats = sync(memfs, tmp_path, "memory://dist/repo.tar.gz")
    assert files_under(first) == ["iris/1/model.joblib", "iris/model.yaml"]
    assert stats.downloads == 1
    second, stats = sync(memfs, tmp_path, "memory://dist/repo.tar.gz")
    assert second == first and stats.downloads == 0 and stats.reused == 1
    assert not list((tmp_path / "tmp").iterdir())  # the archive itself is not kept


def test_evil_archive_is_refused_with_its_uri(
    memfs: type[MemoryFileSystem], tmp_path: Path
) -> None:
    memfs(skip_instance_cache=True).pipe("/dist/evil.tgz", tar_gz({"../evil": b"x"}))
    with pytest.raises(StorageError, match=r"memory://dist/evil.tgz: refusing .* '\.\.'"):
        sync(memfs, tmp_path, "memory://dist/evil.tgz")
    assert not (tmp_path / "unpacked").exists() or not list((tmp_path / "unpacked").iterdir())


def test_lock_wait_is_bounded(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    uri_id = digest("memory://repo", None)[:32]
    held = file_lock(tmp_path / "locks" / f"{uri_id}.lock", 1, "held")
    with held, pytest.raises(StorageError, match="memory://repo: another process"):
        sync(memfs, tmp_path, options=StorageOptions(lock_timeout_s=0.1))


def test_async_entry_point(memfs: type[MemoryFileSystem], tmp_path: Path) -> None:
    path = asyncio.run(materialize_async("memory://repo", tmp_path, registry=registry_for(memfs)))
    assert (path / "iris/model.yaml").is_file()


# --- local paths and the registry ------------------------------------------------------------


def test_local_folder_is_used_in_place(tmp_path: Path) -> None:
    assert materialize(str(tmp_path), tmp_path / "cache") == tmp_path
    assert materialize(f"file://{tmp_path}", tmp_path / "cache") == tmp_path
    assert not (tmp_path / "cache").exists()


def test_local_archive_goes_through_the_cache(tmp_path: Path) -> None:
    archive = tmp_path / "repo.tgz"
    archive.write_bytes(tar_gz({"iris/1/model.joblib": b"w"}))
    first = materialize(str(archive), tmp_path / "cache")
    stats = StorageStats()
    assert materialize(str(archive), tmp_path / "cache", stats=stats) == first
    assert stats.downloads == 0
    assert files_under(first) == ["iris/1/model.joblib"]


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="nope: no such file or folder"):
        materialize(str(tmp_path / "nope"), tmp_path / "cache")


def test_unknown_scheme_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"ftp://x/y: unsupported scheme 'ftp'; known: .*s3://"):
        materialize("ftp://x/y", tmp_path)


def test_missing_extra_names_it(tmp_path: Path) -> None:
    def not_installed(scheme: str, **kwargs: Any) -> None:
        raise ImportError("Install gcsfs to access Google Storage")

    registry = StorageRegistry({"gs": FsspecBackend("gcs", no_kwargs, filesystem=not_installed)})
    with pytest.raises(StorageError, match=r"gs://b/m: .*pip install 'servekit\[gcs\]'"):
        materialize("gs://b/m", tmp_path, registry=registry)


def test_options_reach_the_filesystem(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def capture(scheme: str, **kwargs: Any) -> None:
        seen.update(kwargs, scheme=scheme)
        raise ImportError("stop here")

    backend = default_registry().backend_for("s3://b")
    registry = StorageRegistry({"s3": FsspecBackend("s3", backend.kwargs, filesystem=capture)})
    options = StorageOptions(
        endpoint_url="http://127.0.0.1:9000", key="k", secret="s", fs_kwargs={"s3": {"a": 1}}
    )
    with pytest.raises(StorageError):
        materialize("s3://b/repo", tmp_path, options, registry=registry)
    assert seen == {
        "scheme": "s3",
        "endpoint_url": "http://127.0.0.1:9000",
        "key": "k",
        "secret": "s",
        "a": 1,
    }


@pytest.mark.parametrize(
    ("uri", "scheme"),
    [
        ("/models", ""),
        ("models/iris", ""),
        ("my:models", ""),
        ("file:///m", "file"),
        ("S3://b/k", "s3"),
        ("https://h/m.joblib", "https"),
        ("abfs://c@a.dfs.core.windows.net/p", "abfs"),
    ],
)
def test_uri_scheme(uri: str, scheme: str) -> None:
    assert uri_scheme(uri) == scheme


def test_registry_is_per_instance() -> None:
    registry: StorageRegistry = default_registry()
    registry.register("custom", FsspecBackend(None, no_kwargs))
    assert "custom" in registry.schemes and "custom" not in default_registry().schemes
