"""Protocol-neutral inference request and response.

Every transport decodes its wire format into these and encodes them back; nothing below the
transports knows whether a request came over REST V2, REST V1 or gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from servekit.types.tensors import Tensor

Parameters = dict[str, Any]


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    outputs: list[RequestedOutput] = field(default_factory=list)


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    outputs: list[Tensor]
    model_version: str | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)


@dataclass(slots=True)
class RequestContext:
    """Facts about one request that are not part of the payload (who, how, since when)."""

    protocol: str
    request_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    served_by: str | None = None
    """'model/version' that answered; set by the DataPlane, sent back by the transports."""
    service: str | None = None
    variant: str | None = None
    """The deployment and variant a request was routed through (kept in the payload log)."""
    group_commit: bool = False
    """Set by a transport that yields to the event loop between the inference and writing its
    response (``lane.py`` under concurrent load): the payload log may then append this
    inference's record together with the others of the same loop turn, and it is still in
    the spool before the response leaves."""
    chosen_variant: str | None = None
    """The variant the service this request was sent to chose for it (a metrics label)."""
