"""The batch renderer (bytes from cached pieces) writes the same events as the CloudEvents SDK's
structured mode does from the record's attributes and JSON documents, whatever the record holds."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from servekit.observe.payloads.cloudevents import (
    batch_body,
    event_dict,
    event_lines,
    render_lines,
    to_events,
)
from servekit.observe.payloads.record import InferenceRecord, capture
from servekit.types.tensors import Tensor

NOTHING: frozenset[str] = frozenset()
T0 = 1_700_000_000.0


def records() -> list[InferenceRecord]:
    def iris(n: int) -> list[Tensor]:  # distinct rows: the batch renderer stacks them
        return [Tensor.from_array("input-0", np.array([[5.1 + n, 3.5, 1.4, -n]], np.float32))]

    def label(n: int) -> list[Tensor]:
        return [Tensor.from_array("predict", np.array([n % 3], np.int64))]

    empty = [Tensor.from_array("none", np.zeros((0,), np.float64))]
    varied = [
        Tensor("text", "BYTES", np.array([b"ab", '\u00e9"q'], dtype=object)),
        Tensor.from_array("half", np.array([1.5, -2.25], np.float16)),
        Tensor.from_array("flag", np.array([True, False])),
        Tensor.from_array("wide", np.arange(6, dtype=np.uint16).reshape(2, 3)),
    ]
    made = [
        InferenceRecord(
            id=f"req-{n}",
            model="iris",
            version="1",
            service="iris",
            protocol="rest-v2",
            time=T0 + n * 0.0017,
            latency_ms=0.25 + n,
            parameters={"n": n} if n % 2 else {},
            inputs=capture(iris(n) + (empty if n > 1 else []), NOTHING, 1 << 20),
            outputs=capture(label(n), NOTHING, 1 << 20),
        )  # fmt: skip
        for n in range(4)
    ]
    made.append(
        InferenceRecord(
            id='quote"and\\slash',
            model="iris",
            version="2",
            service="svc",
            variant="canary",
            protocol="grpc",
            time=T0 + 1.0,
            latency_ms=2.5,
            status="invalid_argument",
            http_status=400,
            error='expected "shape" [1, 4]',
            inputs=capture(varied[:1], frozenset({"text"}), 1 << 20),
        )  # fmt: skip
    )
    made.append(
        InferenceRecord(
            id="varied",
            model="other",
            version="7",
            service="other",
            protocol="rest-v1",
            time=T0 + 2.999_999_6,
            latency_ms=0.000_4,
            inputs=capture(varied, NOTHING, 1 << 20),
            outputs=capture(label(1), NOTHING, 4),  # over the limit: truncated
        )  # fmt: skip
    )
    return made


def sdk_rendering(record: InferenceRecord, mode: str) -> list[dict]:
    return [orjson.loads(orjson.dumps(event_dict(e))) for e in to_events(record, mode)]


def as_float32(value: Any) -> Any:
    """Floats as the FP32 values they hold: the batch renderer writes an FP32 value's shortest
    text (5.1), the SDK path the double it widens to (5.099999904632568)."""
    if isinstance(value, float):
        return float(np.float32(value))
    if isinstance(value, dict):
        return {k: as_float32(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_float32(v) for v in value]
    return value


@pytest.mark.parametrize("mode", ["all", "request", "response"])
def test_rendered_events_match_the_sdk_rendering(mode: str) -> None:
    batch = records()
    expected = as_float32([event for r in batch for event in sdk_rendering(r, mode)])
    assert as_float32([orjson.loads(line) for line in render_lines(batch, mode)]) == expected
    assert as_float32(orjson.loads(batch_body(batch, mode))) == expected
    singles = [orjson.loads(line) for r in batch for line in event_lines(r, mode)]
    assert as_float32(singles) == expected


def test_times_are_rfc3339_utc_rounded_to_the_microsecond() -> None:
    first, whole, rounded_up = records()[0], records()[4], records()[5]
    times = [orjson.loads(line)["time"] for line in render_lines([first, whole, rounded_up])]
    assert times == [
        "2023-11-14T22:13:20Z",  # a whole second, as orjson writes a datetime
        "2023-11-14T22:13:20.000250Z",  # arrival + 0.25 ms
        "2023-11-14T22:13:21Z",
        "2023-11-14T22:13:21.002500Z",
        "2023-11-14T22:13:23Z",  # 2.9999996 s rounds up into the next second
        "2023-11-14T22:13:23Z",
    ]
