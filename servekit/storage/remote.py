"""fsspec-backed stores (s3, gs, az, http/https): sync a remote tree or file into the cache."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from servekit.storage.archive import ArchiveLimits, is_archive, unpack_archive
from servekit.storage.cache import Cache, content_key, digest, file_key
from servekit.storage.errors import StorageError
from servekit.storage.options import StorageOptions, StorageStats
from servekit.storage.paths import safe_parts

logger = logging.getLogger("servekit.storage")

KwargsBuilder = Callable[[StorageOptions], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Remote:
    """One object to fetch: where it lives, where it goes in the snapshot, what it should be."""

    path: str
    parts: tuple[str, ...]
    size: int | None
    key: str | None


@dataclass(frozen=True, slots=True)
class FsspecBackend:
    """A store reached through an fsspec filesystem; ``kwargs`` maps options to its arguments.

    ``lists_trees`` is False for http(s): fsspec would "list" a folder URL by crawling the links
    of an HTML page, so such URIs must name one artifact or archive. ``filesystem`` replaces
    ``fsspec.filesystem(scheme, **kwargs)`` (tests, or a pre-configured client).
    """

    extra: str | None
    kwargs: KwargsBuilder
    lists_trees: bool = True
    filesystem: Callable[..., Any] | None = None

    def materialize(
        self, uri: str, cache_dir: Path, options: StorageOptions, stats: StorageStats | None
    ) -> Path:
        cache = Cache(cache_dir)
        uri_id = digest(uri, options.endpoint_url)[:32]
        with cache.locked(uri_id, options.lock_timeout_s, uri):
            try:
                fs = self._filesystem(uri, options)
                folder = Sync(fs, uri, uri_id, cache, options, stats, self.lists_trees)()
            except Exception as exc:  # the boundary: foreign errors become StorageError here
                stale = cache.read_ref(uri_id) if options.use_stale_on_error else None
                if stale is None:
                    if isinstance(exc, StorageError):
                        raise
                    raise _translate(uri, exc) from exc
                logger.warning("%s: %s; serving the cached copy %s", uri, exc, stale)
                return stale
            cache.write_ref(uri_id, folder)
            return folder

    def _filesystem(self, uri: str, options: StorageOptions) -> Any:
        scheme = uri.split("://", 1)[0].lower()
        kwargs = {**self.kwargs(options), **options.fs_kwargs.get(scheme, {})}
        try:
            if self.filesystem is not None:
                fs = self.filesystem(scheme, **kwargs)
            else:
                import fsspec

                # fsspec reuses one instance per arguments (a new S3 client costs ~0.5 s); its
                # listing cache would hide remote changes, so every sync starts with it cleared.
                fs = fsspec.filesystem(scheme, **kwargs)
        except ImportError as exc:
            hint = f"pip install 'servekit[{self.extra}]'" if self.extra else str(exc)
            raise StorageError(f"{uri}: support for {scheme}:// is not installed ({hint})") from exc
        fs.invalidate_cache()
        return fs


class Sync:
    """One sync of one URI into the cache, run while holding that URI's lock."""

    def __init__(
        self,
        fs: Any,
        uri: str,
        uri_id: str,
        cache: Cache,
        options: StorageOptions,
        stats: StorageStats | None,
        lists_trees: bool = True,
    ) -> None:
        self.fs, self.uri, self.uri_id, self.cache = fs, uri, uri_id, cache
        self.options, self.stats = options, stats or StorageStats()
        self.lists_trees = lists_trees
        self.where = f"{options.endpoint_url or ''}|{uri.split('://', 1)[0]}"

    def __call__(self) -> Path:
        root = self.fs._strip_protocol(self.uri)
        info = self.fs.info(root)
        if info.get("type") == "directory":
            return self._tree(root)
        name = PurePosixPath(urlsplit(root).path if "://" in root else root).name or "model"
        remote = Remote(root, (), info.get("size"), self._key(root, info))
        if is_archive(name):
            return self._archive(remote, name)
        return self._single(remote, name)

    def _key(self, path: str, info: Mapping[str, Any]) -> str | None:
        return content_key(f"{self.where}|{path}", info)

    # --- the three shapes a URI can have --------------------------------------------------------

    def _tree(self, root: str) -> Path:
        if not self.lists_trees:
            raise StorageError(f"{self.uri}: names a folder; http(s) URIs must name one file")
        prefix = root.rstrip("/") + "/"
        remotes = []
        for path, info in sorted(self.fs.find(root, detail=True).items()):
            relative = path[len(prefix) :] if path.startswith(prefix) else ""
            if not relative or path.endswith("/"):
                continue  # folder markers some consoles create
            try:
                parts = safe_parts(relative)
            except ValueError as exc:
                raise StorageError(f"{self.uri}: refusing object {relative!r}: it {exc}") from None
            remotes.append(Remote(path, parts, info.get("size"), self._key(path, info)))
        if not remotes:
            raise StorageError(f"{self.uri}: no files found")
        keys = self._fetch(remotes)
        return self.cache.snapshot(
            self.uri_id, [(r.parts, self.cache.object_path(keys[r.path])) for r in remotes]
        )

    def _single(self, remote: Remote, name: str) -> Path:
        """One artifact becomes a one-model repository: ``<stem>/<artifact>``."""
        keys = self._fetch([remote])
        model = name.split(".", 1)[0] or "model"
        obj = self.cache.object_path(keys[remote.path])
        return self.cache.snapshot(self.uri_id, [((model, name), obj)])

    def _archive(self, remote: Remote, name: str) -> Path:
        """Unpacked once per content key; the archive itself is not kept."""
        if remote.key and self.cache.unpacked_path(remote.key).is_dir():
            self.stats.record_reuse()
            return self.cache.unpacked_path(remote.key)
        limits = ArchiveLimits(self.options.max_archive_bytes, self.options.max_archive_members)
        with self.cache.scratch(self.uri_id) as work:
            local = work / name
            self._download([remote], [local])
            key = remote.key or file_key(f"{self.where}|{remote.path}", local)
            dest = self.cache.unpacked_path(key)
            if not dest.is_dir():  # unpacked in scratch (cleared if we die), then one rename
                tree = unpack_archive(local, work / "tree", limits, self.uri)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.rename(tree, dest)
            return dest

    # --- transfers -----------------------------------------------------------------------------

    def _fetch(self, remotes: list[Remote]) -> dict[str, str]:
        """Content key per remote path, downloading only what the cache lacks."""
        keys: dict[str, str] = {}
        for remote in remotes:
            if remote.key is not None and self.cache.has_object(remote.key):
                keys[remote.path] = remote.key
        self.stats.record_reuse(len(keys))
        missing = [r for r in remotes if r.path not in keys]
        if not missing:
            return keys
        with self.cache.scratch(self.uri_id) as work:
            locals_ = [work / str(i) for i in range(len(missing))]
            self._download(missing, locals_)
            for remote, local in zip(missing, locals_, strict=True):
                key = remote.key or file_key(f"{self.where}|{remote.path}", local)
                self.cache.publish_object(key, local)
                keys[remote.path] = key
        return keys

    def _download(self, remotes: list[Remote], locals_: list[Path]) -> None:
        """Fetch into scratch files (fsspec batches them concurrently); check sizes before use."""
        self.fs.get([r.path for r in remotes], [str(p) for p in locals_])
        for remote, local in zip(remotes, locals_, strict=True):
            size = local.stat().st_size
            if remote.size is not None and size != remote.size:
                raise StorageError(
                    f"{self.uri}: {remote.path} arrived with {size} bytes, expected "
                    f"{remote.size} (changed during download or truncated); try again"
                )
            self.stats.record_download(self.fs.unstrip_protocol(remote.path), size)


def _translate(uri: str, exc: Exception) -> StorageError:
    """Foreign exceptions become one StorageError naming the URI (the cause stays chained)."""
    if isinstance(exc, FileNotFoundError):
        return StorageError(f"{uri}: not found")
    if isinstance(exc, PermissionError):
        return StorageError(f"{uri}: access denied ({exc})")
    return StorageError(f"{uri}: {type(exc).__name__}: {exc}")


# --- options -> fsspec arguments, one builder per store --------------------------------------


def no_kwargs(options: StorageOptions) -> dict[str, Any]:
    return {}


def s3_kwargs(options: StorageOptions) -> dict[str, Any]:
    """s3fs: unset credentials fall through to botocore's chain (AWS_* variables, profiles)."""
    kwargs: dict[str, Any] = {}
    if options.endpoint_url:
        kwargs["endpoint_url"] = options.endpoint_url
    if options.key is not None:
        kwargs["key"] = options.key
    if options.secret is not None:
        kwargs["secret"] = options.secret
    if options.anon:
        kwargs["anon"] = True
    return kwargs


def gcs_kwargs(options: StorageOptions) -> dict[str, Any]:
    """gcsfs: application default credentials unless anonymous."""
    kwargs: dict[str, Any] = {}
    if options.endpoint_url:
        kwargs["endpoint_url"] = options.endpoint_url
    if options.anon:
        kwargs["token"] = "anon"
    return kwargs


def azure_kwargs(options: StorageOptions) -> dict[str, Any]:
    """adlfs: key/secret are the account name and key; otherwise AZURE_STORAGE_* as adlfs reads."""
    kwargs: dict[str, Any] = {}
    if options.key is not None:
        kwargs["account_name"] = options.key
    if options.secret is not None:
        kwargs["account_key"] = options.secret
    if options.anon:
        kwargs["anon"] = True
    return kwargs
