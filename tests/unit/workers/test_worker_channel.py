"""The transport between the server and a worker, both ends in one process: small tensors go
inline, large ones through the shared arena, and memory still referenced is never rewritten."""

from __future__ import annotations

import os

import numpy as np

from servekit.workers.channel import BODY_INLINE_MAX, HEAD, INBAND_MAX, KEEP_ARENA, Channel


def transfer(sender: Channel, receiver: Channel, message: tuple, tensors=None):
    """What the receiving side gets (fds are duplicated as if they crossed a socket)."""
    record, fds = sender.pack(message, tensors)
    sender.seal(record)
    received = [os.dup(fd) for fd in fds]
    for fd in fds:
        os.close(fd)
    got, arrays, extra = receiver.unpack(bytes(record), received)
    assert extra == []
    return got, arrays, len(record), len(fds)


def test_small_tensors_travel_inline_and_stay_writable():
    a, b = Channel(), Channel()
    x = np.array([[5.1, 3.5, 1.4, 0.2]])
    message, arrays, size, fds = transfer(a, b, ("predict", None, {"p": 1}), {"x": x})
    assert message == ("predict", None, {"p": 1}) and fds == 0 and size < 200
    np.testing.assert_array_equal(arrays["x"], x)
    arrays["x"][0, 0] = 0.0


def test_large_tensors_travel_through_the_arena_as_views():
    a, b = Channel(), Channel()
    big = np.random.default_rng(0).random((1000, 100))
    _, arrays, size, fds = transfer(a, b, ("m",), {"big": big, "t": big.T})
    assert fds == 1 and size < 400  # a new arena's fd, and only metadata inline
    np.testing.assert_array_equal(arrays["big"], big)
    np.testing.assert_array_equal(arrays["t"], big.T)
    assert arrays["big"].nbytes > INBAND_MAX and arrays["big"].base is not None


def reply(worker: Channel, server: Channel) -> None:
    """The worker answers; its record says whether it still holds views of the request."""
    transfer(worker, server, ("ok",))


def test_an_arena_still_referenced_is_replaced_not_rewritten():
    server, worker = Channel(), Channel()
    ones, twos = np.ones((500, 100)), np.full((500, 100), 2.0)
    _, kept, _, _ = transfer(server, worker, ("m",), {"x": ones})  # the model keeps its input
    reply(worker, server)
    _, second, _, new_arena = transfer(server, worker, ("m",), {"x": twos})
    assert new_arena == 1  # written to a fresh arena...
    assert (kept["x"] == 1.0).all() and (second["x"] == 2.0).all()  # ...so nothing changed
    del kept, second
    reply(worker, server)
    _, third, _, new_arena = transfer(server, worker, ("m",), {"x": ones})
    assert new_arena == 0 and (third["x"] == 1.0).all()  # no views left: reused


def test_large_pickles_and_object_arrays_go_through_the_arena():
    a, b = Channel(), Channel()
    words = np.array([b"x" * 100] * 1000, dtype=object)
    message, arrays, size, _ = transfer(a, b, ("m", "p" * BODY_INLINE_MAX), {"w": words})
    assert size == HEAD.size and message[1] == "p" * BODY_INLINE_MAX
    assert arrays["w"].dtype == object and arrays["w"].tolist() == words.tolist()


def test_a_huge_arena_is_given_back_when_messages_are_small_again():
    server, worker = Channel(), Channel()
    huge = np.ones(KEEP_ARENA // 8 + 1)
    _, _, _, new_arena = transfer(server, worker, ("m",), {"x": huge})
    assert new_arena == 1
    reply(worker, server)
    _, got, _, new_arena = transfer(server, worker, ("m",), {"x": np.ones(200_000)})
    assert new_arena == 1 and (got["x"] == 1.0).all()  # a smaller arena replaced the huge one
