"""Plain objects the storage layer is configured with (built from settings by the caller)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GiB = 1024**3


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """How to reach remote stores and how much to trust archives.

    Credentials left as None fall through to each client's usual sources (botocore reads
    ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_ENDPOINT_URL``, gcsfs Google's application
    default credentials, adlfs ``AZURE_STORAGE_*``); this package never reads the environment.
    """

    endpoint_url: str | None = None  # S3-compatible stores (MinIO, Ceph) and GCS emulators
    key: str | None = None  # S3 access key id; Azure account name
    secret: str | None = None  # S3 secret access key; Azure account key
    anon: bool = False  # unsigned requests to public buckets
    fs_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by URI scheme
    max_archive_bytes: int = 8 * GiB  # total uncompressed size of one archive
    max_archive_members: int = 10_000
    lock_timeout_s: float = 900.0  # how long to wait for another process syncing the same URI
    use_stale_on_error: bool = False  # serve the last good copy when the store is unreachable


@dataclass(slots=True)
class StorageStats:
    """Counters a caller may pass in to observe what a sync did (thread-safe)."""

    downloads: int = 0
    bytes_downloaded: int = 0
    reused: int = 0
    downloaded: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_download(self, uri: str, nbytes: int) -> None:
        with self._lock:
            self.downloads += 1
            self.bytes_downloaded += nbytes
            self.downloaded.append(uri)

    def record_reuse(self, count: int = 1) -> None:
        with self._lock:
            self.reused += count
