"""Messages between the server and a worker: small ones inline, large arrays in shared memory.

A message is a small pickled tuple plus a dict of tensors. Numeric arrays are not pickled as
numpy objects (numpy's generic pickling costs ~10 us for a 1x4 array here): each travels as
``(dtype string, shape, payload)``. Up to ``INBAND_MAX`` bytes the payload is the raw bytes,
inline; above, the sender copies the array once into its *arena* (a memfd that both processes
map) and the receiver builds the array as a view of that memory, without a copy. Arrays of
objects (BYTES tensors) are pickled as they are.

Each side writes only its own arena and reads only the peer's, and a link carries one exchange
at a time, so writes never race reads. Views handed out may outlive the exchange (a response
kept by the caller, an input kept by a model): before writing again the reader tells the writer
whether its arena is still referenced; if so the writer maps a fresh one and the old memory
lives on, untouched, until its last view is garbage-collected (arenas are never unmapped
explicitly; the last reference to the mmap unmaps it). Memfds need no names and no
cleanup: a crash frees them with the process.

One SOCK_SEQPACKET record: ``HEAD`` (new arena size, body offset and length in the arena,
flags), then the pickle unless it is large, in which case it lies in the arena. A new arena
travels as the record's first file descriptor.
"""

from __future__ import annotations

import array
import mmap
import os
import pickle
import socket
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

INBAND_MAX = 16 * 1024
"""Arrays up to this size are cheaper to copy through the socket than to place in the arena."""
BODY_INLINE_MAX = 48 * 1024
"""A pickle larger than this is placed in the arena, keeping socket records small."""
RECORD_MAX = BODY_INLINE_MAX + 1024
MAX_FDS = 4
ANCILLARY_SPACE = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
ALIGN = 64
MIN_ARENA = 1 << 20
KEEP_ARENA = 64 << 20
"""Arenas up to this size are kept whatever the next message needs; larger ones are replaced
by a smaller one when a message needs less than a quarter of them."""
PLAIN_KINDS = frozenset("biufcmM")

HEAD = struct.Struct("<QQQB")
FLAGS_AT = 24
PEER_ARENA_BORROWED = 1
BODY_IN_ARENA = 2

_dtypes: dict[str, np.dtype] = {}
Record = bytes | memoryview


class ProtocolError(RuntimeError):
    """The peer sent a record this side cannot read."""


def _align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def _dtype(code: str) -> np.dtype:
    dtype = _dtypes.get(code)
    if dtype is None:
        dtype = _dtypes[code] = np.dtype(code)
    return dtype


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
        """Whether an array or view of this arena is alive: each holds a reference to the
        mmap (CPython counts them exactly)."""
        return sys.getrefcount(self.mm) > self._baseline


class Channel:
    """One end of a link: packs what it sends into its own arena, unpacks the peer's."""

    def __init__(self) -> None:
        self._out: Arena | None = None
        self._in: Arena | None = None
        self._drop_out = False

    def pack(
        self, message: tuple, tensors: Mapping[str, Any] | None = None
    ) -> tuple[bytearray, list[int]]:
        """The record and the fds to attach (a new arena's; the caller closes them once sent).
        On the other side ``unpack`` returns ``message`` and ``tensors``. ``seal`` the record
        before sending it."""
        encoded: list[tuple] | None = None
        large: list[tuple[int, np.ndarray]] = []
        used = 0
        if tensors is not None:
            encoded = []
            for name, array in tensors.items():
                if (
                    type(array) is not np.ndarray
                    or array.dtype.kind not in PLAIN_KINDS
                    or array.dtype.fields is not None
                ):
                    encoded.append((name, None, None, array))  # pickled as it is
                elif array.nbytes <= INBAND_MAX:
                    encoded.append((name, array.dtype.str, array.shape, array.tobytes()))
                else:
                    encoded.append((name, array.dtype.str, array.shape, used))
                    large.append((used, array))
                    used += _align(array.nbytes)
        body = pickle.dumps((message, encoded), protocol=5)
        flags = 0
        fds: list[int] = []
        new_size = body_offset = body_length = 0
        if len(body) > BODY_INLINE_MAX:
            flags |= BODY_IN_ARENA
            body_offset, body_length = used, len(body)
            used += body_length
        if used:
            arena, fd = self._arena_for(used)
            if fd is not None:
                fds.append(fd)
                new_size = arena.size
            for offset, array in large:
                target = np.ndarray(array.shape, array.dtype, buffer=arena.mm, offset=offset)
                np.copyto(target, array, casting="no")
                del target
            if flags & BODY_IN_ARENA:
                arena.mm[body_offset : body_offset + body_length] = body
                body = b""
        record = bytearray(HEAD.size + len(body))
        HEAD.pack_into(record, 0, new_size, body_offset, body_length, flags)
        record[HEAD.size :] = body
        return record, fds

    def seal(self, record: bytearray) -> None:
        """Tell the peer, in ``record``, whether our views of its arena are still alive (then
        it must write its next message elsewhere). Call it once the arrays just packed are
        dropped: they may be such views (a model that returns its input)."""
        if self._in is not None and self._in.borrowed:
            record[FLAGS_AT] |= PEER_ARENA_BORROWED
            self._in = None

    def _arena_for(self, need: int) -> tuple[Arena, int | None]:
        arena = self._out
        # Reuse it unless the peer still reads it, it is too small, or it is huge and mostly
        # unused (one huge request must not pin that memory in both processes for good).
        if (
            arena is not None
            and not self._drop_out
            and arena.size >= need
            and (arena.size <= KEEP_ARENA or 4 * need >= arena.size)
        ):
            return arena, None
        size = max(need, MIN_ARENA)
        if arena is not None and arena.size < need:
            size = max(size, 2 * arena.size)  # grow geometrically: few re-maps for rising sizes
        self._out, fd = Arena.create(size)
        self._drop_out = False
        return self._out, fd

    def unpack(
        self, record: bytes | memoryview, fds: list[int]
    ) -> tuple[tuple, dict | None, list[int]]:
        """``(message, tensors, fds)``: what ``pack`` was given, and any fds beyond a new
        arena's (the caller owns them)."""
        new_size, body_offset, body_length, flags = HEAD.unpack_from(record)
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
            self._in = arena
        if flags & BODY_IN_ARENA:
            mm = self._mapped()
            message, encoded = pickle.loads(mm[body_offset : body_offset + body_length])
        else:
            message, encoded = pickle.loads(record[HEAD.size :])
        if encoded is None:
            return message, None, fds
        tensors = {}
        for name, code, shape, payload in encoded:
            if code is None:
                tensors[name] = payload
            elif type(payload) is bytes:
                # A bytearray copy keeps the array writable, as a model may expect.
                tensors[name] = np.frombuffer(bytearray(payload), _dtype(code)).reshape(shape)
            else:
                tensors[name] = np.ndarray(
                    shape, _dtype(code), buffer=self._mapped(), offset=payload
                )
        return message, tensors, fds

    def _mapped(self) -> mmap.mmap:
        if self._in is None:
            raise ProtocolError("arena data arrived before any arena")
        return self._in.mm

    def close(self) -> None:
        """Drop this side's arenas. Never unmapped explicitly: numpy arrays over an mmap hold a
        reference but no buffer export, so only the reference count knows when it is unused
        (and an offloaded pack may still be writing); the last reference unmaps it."""
        self._out = self._in = None


def send(sock: socket.socket, record: bytes | bytearray, fds: Sequence[int]) -> None:
    if fds:
        socket.send_fds(sock, [record], list(fds))
    else:
        sock.send(record)


class Receiver:
    """Reads records from one socket into a buffer it reuses (no allocation per record)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray(RECORD_MAX)
        self._view = memoryview(self._buffer)

    def __call__(self) -> tuple[memoryview, list[int]]:
        """One record (valid until the next call) and its fds; empty when the peer closed."""
        size, ancillary, flags, _ = self._sock.recvmsg_into([self._buffer], ANCILLARY_SPACE)
        fds = array.array("i")
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            close_fds(fds)
            raise ProtocolError(f"record truncated (flags {flags:#x})")
        return self._view[:size], list(fds)


def close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        os.close(fd)
