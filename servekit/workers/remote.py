"""Exceptions raised in a worker process, carried to the server and raised there.

The server must report a model's exception exactly as if the model ran in-process: the core
names ``type(exc).__name__`` in the 500 it sends, and a ``ServekitError`` a model raises on
purpose (say ``InvalidInput``) keeps its status. So the exception itself is pickled when it
can be; otherwise (a class defined in the user's model.py, unknown to the server) a stand-in
class with the same name and module is raised. Either way the worker's traceback is chained
as the cause, so the server log shows where in the model it failed.
"""

from __future__ import annotations

import pickle
import traceback
from dataclasses import dataclass

MAX_TRACEBACK = 16 * 1024


class RemoteTraceback(Exception):
    """The formatted traceback from the worker (shown as the cause in the server log)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WorkerException(Exception):
    """Base of the stand-ins for exception classes the server process cannot import."""


_standins: dict[tuple[str, str], type[WorkerException]] = {}


def _standin(module: str, name: str) -> type[WorkerException]:
    key = (module, name)
    cls = _standins.get(key)
    if cls is None:
        cls = type(name, (WorkerException,), {"__module__": module, "__qualname__": name})
        _standins[key] = cls
    return cls


@dataclass(slots=True, frozen=True)
class RemoteError:
    """What crosses the process boundary for one exception."""

    module: str
    name: str
    message: str
    traceback: str
    pickled: bytes | None

    @classmethod
    def capture(cls, exc: BaseException) -> RemoteError:
        text = "".join(traceback.format_exception(exc))
        if len(text) > MAX_TRACEBACK:
            text = "...\n" + text[-MAX_TRACEBACK:]
        # Drop the frames: they hold the request's arrays, which live in shared memory.
        traceback.clear_frames(exc.__traceback__)
        exc.__traceback__ = None
        try:
            pickled: bytes | None = pickle.dumps(exc, protocol=5)
        except Exception:  # noqa: BLE001 - unpicklable exceptions travel as a stand-in
            pickled = None
        kind = type(exc)
        return cls(kind.__module__, kind.__qualname__, str(exc), text, pickled)

    def rebuild(self) -> Exception:
        """The exception to raise in the server. SystemExit and KeyboardInterrupt (not
        ``Exception``s) become stand-ins: raised as they are, they would stop the server."""
        unpickled: object = None
        if self.pickled is not None:
            try:
                unpickled = pickle.loads(self.pickled)
            except Exception:  # noqa: BLE001 - e.g. a class from the user's model.py
                unpickled = None
        if isinstance(unpickled, Exception) and _faithful(unpickled, self.message):
            exc: Exception = unpickled
        else:
            exc = _standin(self.module, self.name)(self.message)
        exc.__cause__ = RemoteTraceback(f'\n"""\n{self.traceback}"""')
        return exc


def _faithful(exc: Exception, message: str) -> bool:
    """Whether the unpickled exception can be raised as it is: not when it unpickled with
    other arguments, nor StopIteration (a future refuses it; a coroutine would misread it)."""
    if isinstance(exc, StopIteration | StopAsyncIteration):
        return False
    try:
        return str(exc) == message
    except Exception:  # noqa: BLE001
        return False
