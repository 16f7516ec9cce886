"""Storage backends keyed by URI scheme, and the one entry point: ``materialize``."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from servekit.storage.errors import StorageError
from servekit.storage.local import LocalBackend
from servekit.storage.options import StorageOptions, StorageStats
from servekit.storage.remote import FsspecBackend, azure_kwargs, gcs_kwargs, no_kwargs, s3_kwargs

ENTRY_POINT_GROUP = "servekit.storage"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class StorageBackend(Protocol):
    def materialize(
        self, uri: str, cache_dir: Path, options: StorageOptions, stats: StorageStats | None
    ) -> Path:
        """A local folder with the URI's content, laid out as the store has it."""
        ...


def uri_scheme(uri: str) -> str:
    """The scheme, lower-cased; "" for a plain path (a colon alone does not make a URI)."""
    if uri.lower().startswith("file:"):
        return "file"
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


class StorageRegistry:
    """Scheme -> backend. Built per server (no module-level registry), extendable by plugins."""

    def __init__(self, backends: Mapping[str, StorageBackend] | None = None) -> None:
        self._backends: dict[str, StorageBackend] = dict(backends or {})

    def register(self, scheme: str, backend: StorageBackend) -> None:
        self._backends[scheme.lower()] = backend

    @property
    def schemes(self) -> list[str]:
        return sorted(s for s in self._backends if s)

    def backend_for(self, uri: str) -> StorageBackend:
        scheme = uri_scheme(uri)
        try:
            return self._backends[scheme]
        except KeyError:
            known = ", ".join(f"{s}://" for s in self.schemes)
            raise StorageError(f"{uri}: unsupported scheme {scheme!r}; known: {known}") from None

    def materialize(
        self,
        uri: str,
        cache_dir: Path,
        options: StorageOptions | None = None,
        stats: StorageStats | None = None,
    ) -> Path:
        return self.backend_for(uri).materialize(
            uri, Path(cache_dir), options or StorageOptions(), stats
        )


def default_registry() -> StorageRegistry:
    """The built-in schemes plus entry points in group ``servekit.storage`` (name = scheme)."""
    local = LocalBackend()
    s3 = FsspecBackend(extra="s3", kwargs=s3_kwargs)
    gcs = FsspecBackend(extra="gcs", kwargs=gcs_kwargs)
    azure = FsspecBackend(extra="azure", kwargs=azure_kwargs)
    web = FsspecBackend(extra="http", kwargs=no_kwargs, lists_trees=False)
    registry = StorageRegistry(
        {
            "": local,
            "file": local,
            "s3": s3,
            "s3a": s3,
            "gs": gcs,
            "gcs": gcs,
            "az": azure,
            "abfs": azure,
            "abfss": azure,
            "http": web,
            "https": web,
        }
    )
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        registry.register(entry.name, entry.load()())
    return registry


def materialize(
    uri: str,
    cache_dir: Path,
    options: StorageOptions | None = None,
    *,
    stats: StorageStats | None = None,
    registry: StorageRegistry | None = None,
) -> Path:
    """A local folder holding what ``uri`` names, ready for ``scan_repository``.

    A local folder is returned as is. A remote folder is synced into ``cache_dir`` (only changed
    objects are downloaded) and returned as a snapshot folder with the same layout. A single
    artifact becomes ``<stem>/<artifact>`` (a one-model repository); an archive is unpacked.
    Blocking: call it from a thread (``materialize_async``) when an event loop is running.
    """
    return (registry or default_registry()).materialize(uri, cache_dir, options, stats)


async def materialize_async(
    uri: str,
    cache_dir: Path,
    options: StorageOptions | None = None,
    *,
    stats: StorageStats | None = None,
    registry: StorageRegistry | None = None,
) -> Path:
    """``materialize`` in a worker thread, so a (re)load never blocks the event loop."""
    return await asyncio.to_thread(
        materialize, uri, cache_dir, options, stats=stats, registry=registry
    )
