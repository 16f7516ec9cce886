"""Safe unpacking of .tar(.gz/.bz2/.xz) and .zip artifacts.

Everything that comes out of an archive is untrusted: every member is checked before anything is
written (names, types, links, count, total size), files are written into a fresh temporary folder
that is renamed into place only when complete, and sizes are enforced on the bytes actually
written rather than on what the archive declares.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from servekit.storage.errors import StorageError
from servekit.storage.paths import safe_parts

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ZIP_SUFFIXES = (".zip",)
_CHUNK = 1 << 20
_UNPACK_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,  # zipfile: encrypted member
    NotImplementedError,  # zipfile: unsupported compression
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
)


@dataclass(frozen=True, slots=True)
class ArchiveLimits:
    max_bytes: int
    max_members: int


def is_archive(name: str) -> bool:
    return name.lower().endswith(TAR_SUFFIXES + ZIP_SUFFIXES)


def unpack_archive(archive: Path, dest: Path, limits: ArchiveLimits, label: str = "") -> Path:
    """Unpack ``archive`` into ``dest`` (which must not exist yet) and return ``dest``.

    Work happens in ``.<dest name>.partial-<random>`` beside ``dest``; a failure removes it, so a
    half-unpacked tree is never visible under ``dest``. ``label`` (the URI) prefixes errors.
    """
    label = label or str(archive)
    work = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex}")
    work.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(ZIP_SUFFIXES):
            _unpack_zip(archive, work, limits, label)
        else:
            _unpack_tar(archive, work, limits, label)
        os.rename(work, dest)
    except StorageError:
        raise
    except _UNPACK_ERRORS as exc:
        raise StorageError(f"{label}: cannot unpack archive: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _refuse(label: str, member: str, why: str) -> StorageError:
    return StorageError(f"{label}: refusing to unpack archive: member {member!r} {why}")


def _member_parts(label: str, name: str) -> tuple[str, ...]:
    try:
        return safe_parts(name)
    except ValueError as exc:
        raise _refuse(label, name, str(exc)) from None


def _check_count_and_size(label: str, count: int, total: int, limits: ArchiveLimits) -> None:
    if count > limits.max_members:
        raise StorageError(
            f"{label}: refusing to unpack archive: more than {limits.max_members} members"
        )
    if total > limits.max_bytes:
        raise StorageError(
            f"{label}: refusing to unpack archive: uncompressed size exceeds "
            f"{limits.max_bytes} bytes"
        )


# --- tar -------------------------------------------------------------------------------------


def _check_symlink(
    label: str, member: tarfile.TarInfo, parts: tuple[str, ...], kinds: dict[tuple[str, ...], str]
) -> None:
    """A symlink's target must stay inside and never pass through another link, so that its
    textual resolution is its real one (whatever order the members come in)."""
    target = member.linkname
    if target.startswith("/"):
        raise _refuse(label, member.name, f"is a symlink to an absolute path {target!r}")
    resolved: list[str] = list(parts[:-1])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise _refuse(label, member.name, f"is a symlink pointing outside ({target!r})")
            resolved.pop()
        else:
            resolved.append(part)
        if kinds.get(tuple(resolved)) == "link" and tuple(resolved) != parts:
            raise _refuse(label, member.name, "is a symlink whose target passes through a link")


def _check_tar(tar: tarfile.TarFile, limits: ArchiveLimits, label: str) -> list[tarfile.TarInfo]:
    kinds: dict[tuple[str, ...], str] = {}  # parts -> "dir" | "file" | "link"
    members: list[tuple[tarfile.TarInfo, tuple[str, ...]]] = []
    total = 0
    for member in tar:  # lazily, so a header bomb stops at the member limit
        parts = _member_parts(label, member.name)
        if not (member.isdir() or member.isfile() or member.issym() or member.islnk()):
            raise _refuse(label, member.name, "is a device, fifo or other special file")
        if member.issparse():
            raise _refuse(label, member.name, "is a sparse file")
        if not parts:
            if not member.isdir():
                raise _refuse(label, member.name, "has an empty name")
            continue
        if parts in kinds:
            raise _refuse(label, member.name, "appears twice")
        if member.islnk() and kinds.get(_member_parts(label, member.linkname)) != "file":
            target = member.linkname
            raise _refuse(label, member.name, f"is a hard link to {target!r}, not an earlier file")
        kinds[parts] = "dir" if member.isdir() else "link" if member.issym() else "file"
        total += member.size if member.isfile() else 0
        members.append((member, parts))
        _check_count_and_size(label, len(members), total, limits)
    for member, parts in members:  # against the whole archive: a later link counts too
        if any(kinds.get(parts[:i]) in ("link", "file") for i in range(1, len(parts))):
            raise _refuse(label, member.name, "lies under a link or a file")
        if member.issym():
            _check_symlink(label, member, parts, kinds)
    return [member for member, _ in members]


def _unpack_tar(archive: Path, work: Path, limits: ArchiveLimits, label: str) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = _check_tar(tar, limits, label)
        # Python's "data" filter (3.11.4+) repeats the link and path checks against the real
        # filesystem and drops owners and set-uid bits: a second line behind the checks above.
        safer = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(work, members=members, **safer)  # type: ignore[arg-type]


# --- zip -------------------------------------------------------------------------------------


def _check_zip(zf: zipfile.ZipFile, limits: ArchiveLimits, label: str) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    _check_count_and_size(label, len(infos), 0, limits)
    seen: set[tuple[str, ...]] = set()
    for info in infos:
        parts = _member_parts(label, info.filename)
        kind = stat.S_IFMT(info.external_attr >> 16)  # Unix file type, 0 when not recorded
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(label, info.filename, "is a symlink or special file")
        if not parts and not info.is_dir():
            raise _refuse(label, info.filename, "has an empty name")
        if parts and parts in seen:
            raise _refuse(label, info.filename, "appears twice")
        seen.add(parts)
    _check_count_and_size(label, len(infos), sum(i.file_size for i in infos), limits)
    return infos


def _copy_bounded(src: IO[bytes], dst: IO[bytes], allowed: int) -> int:
    """Copy at most ``allowed`` bytes; one byte more means the archive lied about sizes."""
    written = 0
    while chunk := src.read(min(_CHUNK, allowed - written + 1)):
        written += len(chunk)
        if written > allowed:
            raise ValueError("member is larger than declared")
        dst.write(chunk)
    return written


def _unpack_zip(archive: Path, work: Path, limits: ArchiveLimits, label: str) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = _check_zip(zf, limits, label)
        budget = limits.max_bytes
        for info in infos:
            target = work.joinpath(*safe_parts(info.filename))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "xb") as dst:
                budget -= _copy_bounded(src, dst, min(info.file_size, budget))
