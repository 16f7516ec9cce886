"""Names that come from outside (archive members, object keys) turned into safe relative paths."""

from __future__ import annotations

import re

_DRIVE = re.compile(r"^[A-Za-z]:")


def safe_parts(name: str) -> tuple[str, ...]:
    """The components of a relative name, or ValueError if it could land outside its root.

    Refuses absolute paths, drive letters, backslashes (a separator on Windows, so the classic
    zip-slip spelling) and any ``..`` component; ``.`` and empty components are dropped, so
    ``./a//b/`` is ``("a", "b")`` and ``.`` is ``()`` (the root itself).
    """
    if "\x00" in name:
        raise ValueError("contains a NUL byte")
    if "\\" in name:
        raise ValueError("contains a backslash")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError("is an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ValueError("has a '..' component")
    return parts
