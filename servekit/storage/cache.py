"""The local cache: content-addressed object bodies plus snapshots that lay them out as folders.

Layout under the cache folder::

    objects/<k[:2]>/<k>                 downloaded bodies, named by content key, read-only
    snapshots/<uri id>/<manifest id>/   one tree of hard links into objects/ per remote state
                                        (never pruned automatically: a loaded model may still
                                        point into an older one; they cost inodes, not bytes)
    unpacked/<k>/                       an archive unpacked once per content key
    refs/<uri id>                       the last folder served for a URI (for stale fallback)
    tmp/<uri id>-<random>/              downloads in progress; renamed into place when complete
    locks/<uri id>.lock

The key of an object is a hash of where it lives and what the store says its content is (ETag,
MD5, generation, or size + modification time), so a restart finds its files again without
downloading, and a changed object gets a new key rather than overwriting a file in use.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from servekit.storage.locks import file_lock

# Fields fsspec implementations report that change whenever the content does, best first:
# s3fs "ETag", gcsfs "md5Hash"/"generation", adlfs "etag"/"content_md5", http "ETag"/"Content-MD5".
IDENTITY_FIELDS = ("ETag", "etag", "md5Hash", "content_md5", "Content-MD5", "Digest", "generation")
MTIME_FIELDS = ("LastModified", "last_modified", "Last-Modified", "updated", "mtime", "created")
_CHUNK = 1 << 20


def digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()


def content_key(location: str, info: Mapping[str, Any]) -> str | None:
    """A key for an object's content from its listing entry, or None if the store gives none."""
    size = info.get("size")
    for name in IDENTITY_FIELDS:
        if info.get(name):
            return digest(location, name, _text(info[name]), size)
    for name in MTIME_FIELDS:
        if info.get(name):
            return digest(location, name, _text(info[name]), size)
    return None


def file_key(location: str, path: Path) -> str:
    """A key from the bytes themselves, for stores that report no content identity."""
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
    return digest(location, "sha256", sha.hexdigest())


def _text(value: Any) -> str:
    """One spelling per value: listings and info() of one store may differ in type."""
    if isinstance(value, bytes | bytearray):
        return value.hex()
    if isinstance(value, datetime):
        return repr(value.timestamp())
    if isinstance(value, float | int):
        return repr(float(value))
    return str(value)


class Cache:
    """One cache folder; safe to share between threads and processes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- locking and scratch space -------------------------------------------------------------

    @contextmanager
    def locked(self, uri_id: str, timeout_s: float, what: str) -> Iterator[None]:
        """Exclusive per URI; stale scratch of that URI (a killed process) is cleared on entry."""
        with file_lock(self.root / "locks" / f"{uri_id}.lock", timeout_s, what):
            tmp = self.root / "tmp"
            if tmp.is_dir():
                for stale in tmp.glob(f"{uri_id}-*"):
                    shutil.rmtree(stale, ignore_errors=True)
            yield

    @contextmanager
    def scratch(self, uri_id: str) -> Iterator[Path]:
        """A fresh folder on the cache's filesystem (so renames out of it are atomic)."""
        path = self.root / "tmp" / f"{uri_id}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # --- objects -------------------------------------------------------------------------------

    def object_path(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def has_object(self, key: str) -> bool:
        return self.object_path(key).is_file()

    def publish_object(self, key: str, downloaded: Path) -> Path:
        """Move a complete download into place; rename is atomic, so readers never see a part."""
        target = self.object_path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        downloaded.chmod(0o444)
        os.replace(downloaded, target)
        return target

    def unpacked_path(self, key: str) -> Path:
        return self.root / "unpacked" / key

    # --- snapshots -----------------------------------------------------------------------------

    def snapshot(self, uri_id: str, files: Iterable[tuple[tuple[str, ...], Path]]) -> Path:
        """A folder holding ``files`` (relative parts -> object path), built once per content."""
        entries = sorted(files)
        manifest = digest(*(f"{'/'.join(parts)}={obj.name}" for parts, obj in entries))
        folder = self.root / "snapshots" / uri_id / manifest[:32]
        if not folder.is_dir():
            with self.scratch(uri_id) as work:
                tree = work / "tree"
                for parts, obj in entries:
                    target = tree.joinpath(*parts)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(obj, target)
                tree.mkdir(exist_ok=True)
                folder.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tree, folder)
        return folder

    # --- refs (last good result per URI) --------------------------------------------------------

    def write_ref(self, uri_id: str, folder: Path) -> None:
        ref = self.root / "refs" / uri_id
        ref.parent.mkdir(parents=True, exist_ok=True)
        part = ref.with_name(f".{uri_id}.{uuid.uuid4().hex}")
        part.write_text(str(folder.relative_to(self.root)))
        os.replace(part, ref)

    def read_ref(self, uri_id: str) -> Path | None:
        ref = self.root / "refs" / uri_id
        try:
            folder = self.root / ref.read_text().strip()
        except OSError:
            return None
        return folder if folder.is_dir() else None


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard links cost no space and keep size and mtime, so an unchanged file looks unchanged to
    the repository's fingerprints in every snapshot; a copy (no hard links) keeps them too."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
