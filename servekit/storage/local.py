"""Local paths and file:// URIs: folders are used in place; a single file goes through the cache."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from servekit.storage.errors import StorageError
from servekit.storage.options import StorageOptions, StorageStats
from servekit.storage.remote import FsspecBackend, no_kwargs


def local_path(uri: str) -> Path:
    """``file:///a/b``, ``file:/a/b`` and plain paths (``~`` expanded) as a Path."""
    if uri.lower().startswith("file:"):
        parts = urlsplit(uri)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs must not name a host ({parts.netloc!r})")
        return Path(unquote(parts.path))
    return Path(uri).expanduser()


@dataclass(frozen=True, slots=True)
class LocalBackend:
    """A folder is returned as is (no copy); an artifact or archive file is cached like a remote
    one, so ``/models/iris.tar.gz`` and ``s3://bucket/iris.tar.gz`` behave the same."""

    def materialize(
        self, uri: str, cache_dir: Path, options: StorageOptions, stats: StorageStats | None
    ) -> Path:
        path = local_path(uri)
        if path.is_dir():
            return path
        if not path.is_file():
            raise StorageError(f"{uri}: no such file or folder")
        files = FsspecBackend(extra=None, kwargs=no_kwargs)
        return files.materialize(f"file://{path.resolve()}", cache_dir, options, stats)
