"""Model repositories from local paths or fsspec URIs, materialized into a local cache.

``materialize(uri, cache_dir, options)`` returns a local folder that ``scan_repository`` can read.
Backends are looked up by URI scheme in a ``StorageRegistry``; cloud stores are optional extras.
"""

from servekit.storage.archive import ArchiveLimits, is_archive, unpack_archive
from servekit.storage.errors import StorageError
from servekit.storage.options import StorageOptions, StorageStats
from servekit.storage.registry import (
    StorageBackend,
    StorageRegistry,
    default_registry,
    materialize,
    materialize_async,
    uri_scheme,
)

__all__ = [
    "ArchiveLimits",
    "StorageBackend",
    "StorageError",
    "StorageOptions",
    "StorageRegistry",
    "StorageStats",
    "default_registry",
    "is_archive",
    "materialize",
    "materialize_async",
    "unpack_archive",
    "uri_scheme",
]
