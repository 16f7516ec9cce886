"""Exceptions from a worker are raised in the server as the model raised them, when that is
safe; otherwise as a stand-in with the same name (the core's 500 names the type)."""

from __future__ import annotations

import pickle

import pytest

from servekit.errors import InvalidInput
from servekit.workers.remote import RemoteError, WorkerException


def round_trip(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:  # noqa: BLE001 - capture it with its traceback
        captured = RemoteError.capture(caught)
    return pickle.loads(pickle.dumps(captured)).rebuild()


def test_importable_exceptions_keep_their_class_and_the_worker_traceback():
    rebuilt = round_trip(KeyError("feature"))
    assert type(rebuilt) is KeyError and rebuilt.args == ("feature",)
    assert "raise exc" in str(rebuilt.__cause__)
    assert type(round_trip(InvalidInput("bad shape"))) is InvalidInput


def test_unimportable_exceptions_become_a_stand_in_with_the_same_name():
    Local = type("ModelBug", (Exception,), {"__module__": "servekit_user_models.m.v1"})
    rebuilt = round_trip(Local("unlucky"))
    assert isinstance(rebuilt, WorkerException)
    assert type(rebuilt).__name__ == "ModelBug" and str(rebuilt) == "unlucky"


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), StopIteration()])
def test_exits_and_interrupts_cannot_stop_the_server(exc):
    rebuilt = round_trip(exc)
    assert isinstance(rebuilt, WorkerException)
    assert type(rebuilt).__name__ == type(exc).__name__
