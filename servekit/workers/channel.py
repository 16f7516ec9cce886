"""Messages between the server and a worker: small ones inline, large arrays in shared memory.

A message is a pickle (protocol 5). Numpy arrays larger than ``INBAND_MAX`` bytes leave the
pickle as out-of-band buffers: the sender copies each one into its *arena* (a memfd mapped by
both processes) and the receiver rebuilds the arrays as views of that memory, without a copy.
Each side writes only its own arena and reads only the peer's, and a link carries one exchange
at a time, so writes never race reads.

Views handed out may outlive the exchange (a response kept by the caller, an input kept by a
model). Before writing again the reader tells the writer whether its arena is still referenced;
if so the writer maps a fresh one and the old memory lives on, untouched, until its last view
is garbage-collected. Memfds need no names and no cleanup: a crash frees them with the process.

Wire format of one SOCK_SEQPACKET record: ``HEAD`` (new arena size, flags, span count), the
spans (offset, length) of out-of-band buffers, then the pickle itself unless it is large, in
which case it is the last span. A new arena travels as the record's first file descriptor.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import socket
import struct
import sys
from collections.abc import Sequence
from typing import Any

INBAND_MAX = 16 * 1024
"""Buffers up to this size are cheaper to copy through the socket than to place in the arena."""
BODY_INLINE_MAX = 48 * 1024
"""A pickle larger than this is placed in the arena, keeping socket records small."""
RECORD_MAX = BODY_INLINE_MAX + 16 * 1024
MAX_FDS = 4
ALIGN = 64
MIN_ARENA = 1 << 20

HEAD = struct.Struct("<QBxH")
PEER_ARENA_BORROWED = 1
BODY_IN_ARENA = 2


class ProtocolError(RuntimeError):
    """The peer sent a record this side cannot read."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Arena:
    """A memfd mapped into this process; the peer maps the same file."""

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        self.mm = mmap.mmap(fd, size)
        self._baseline = sys.getrefcount(self.mm)

    @classmethod
    def create(cls, size: int) -> tuple[Arena, int]:
        """A new arena and its fd (the caller sends the fd to the peer, then closes it)."""
        size = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        fd = os.memfd_create("servekit-arena", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size), fd
        except BaseException:
            os.close(fd)
            raise

    @property
    def borrowed(self) -> bool:
        """Whether any view into this arena is still alive (each live buffer export holds a
        reference to the mmap; CPython counts them exactly)."""
        return sys.getrefcount(self.mm) > self._baseline

    def release(self) -> None:
        """Unmap now unless views are alive; those keep the memory until they are freed."""
        if not self.borrowed:
            with contextlib.suppress(BufferError):  # a view appeared meanwhile: GC frees it
                self.mm.close()


class Channel:
    """One end of a link: packs what it sends into its own arena, unpacks the peer's."""

    def __init__(self) -> None:
        self._out: Arena | None = None
        self._in: Arena | None = None
        self._drop_out = False

    def pack(self, obj: Any, extra_fds: Sequence[int] = ()) -> tuple[bytes, list[int]]:
        """The record for ``obj`` and the fds to attach. A new arena's fd comes first and
        belongs to the caller, who closes it once sent (see ``close_sent``)."""
        buffers: list[pickle.PickleBuffer] = []

        def out_of_band(buffer: pickle.PickleBuffer) -> bool:
            if buffer.raw().nbytes <= INBAND_MAX:
                return True  # in-band
            buffers.append(buffer)
            return False

        body = pickle.dumps(obj, protocol=5, buffer_callback=out_of_band)
        flags = 0
        if self._in is not None and self._in.borrowed:
            # Our views of the peer's arena are still alive: it must write somewhere else.
            flags |= PEER_ARENA_BORROWED
            self._in = None
        spans: list[int] = []
        fds: list[int] = []
        new_size = 0
        if buffers or len(body) > BODY_INLINE_MAX:
            raws = [b.raw() for b in buffers]
            need = sum(_align(r.nbytes) for r in raws)
            if len(body) > BODY_INLINE_MAX:
                flags |= BODY_IN_ARENA
                need += len(body)
            arena, fd = self._arena_for(need)
            if fd is not None:
                fds.append(fd)
                new_size = arena.size
            view = memoryview(arena.mm)
            offset = 0
            try:
                for raw in raws:
                    view[offset : offset + raw.nbytes] = raw
                    spans += (offset, raw.nbytes)
                    offset += _align(raw.nbytes)
                if flags & BODY_IN_ARENA:
                    view[offset : offset + len(body)] = body
                    spans += (offset, len(body))
                    body = b""
            finally:
                view.release()
        head = HEAD.pack(new_size, flags, len(spans) // 2)
        record = b"".join((head, struct.pack(f"<{len(spans)}Q", *spans), body))
        return record, fds + list(extra_fds)

    def _arena_for(self, need: int) -> tuple[Arena, int | None]:
        arena = self._out
        if arena is not None and arena.size >= need and not self._drop_out:
            return arena, None
        size = max(need, MIN_ARENA)
        if arena is not None and arena.size < need:
            size = max(size, 2 * arena.size)  # grow geometrically: few re-maps for rising sizes
        if arena is not None:
            arena.release()
        self._out, fd = Arena.create(size)
        self._drop_out = False
        return self._out, fd

    def unpack(self, record: bytes, fds: list[int]) -> tuple[Any, list[int]]:
        """The object in ``record`` and the fds that came with it beyond a new arena's."""
        new_size, flags, n_spans = HEAD.unpack_from(record)
        if flags & PEER_ARENA_BORROWED:
            self._drop_out = True
        if new_size:
            if not fds:
                raise ProtocolError("a new arena was announced without its file descriptor")
            fd, fds = fds[0], fds[1:]
            try:
                arena = Arena(fd, new_size)
            finally:
                os.close(fd)
            if self._in is not None:
                self._in.release()
            self._in = arena
        spans = struct.unpack_from(f"<{2 * n_spans}Q", record, HEAD.size)
        end = HEAD.size + 8 * len(spans)
        if not spans:
            return pickle.loads(memoryview(record)[end:]), fds
        if self._in is None:
            raise ProtocolError("arena data arrived before any arena")
        view = memoryview(self._in.mm)
        pieces = [view[spans[i] : spans[i] + spans[i + 1]] for i in range(0, len(spans), 2)]
        del view
        body: Any = pieces.pop() if flags & BODY_IN_ARENA else memoryview(record)[end:]
        return pickle.loads(body, buffers=pieces), fds

    def close(self) -> None:
        for arena in (self._out, self._in):
            if arena is not None:
                arena.release()
        self._out = self._in = None


def send(sock: socket.socket, record: bytes, fds: Sequence[int]) -> None:
    if fds:
        socket.send_fds(sock, [record], list(fds))
    else:
        sock.send(record)


def recv(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One record and its fds; ``b""`` when the peer has closed the link."""
    record, fds, flags, _ = socket.recv_fds(sock, RECORD_MAX, MAX_FDS)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"record truncated (flags {flags:#x})")
    return record, fds


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
