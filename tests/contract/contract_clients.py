"""Two clients with one interface: REST (httpx) and gRPC (grpcio + Triton's V2 stubs).

Each call returns an Outcome: the status as a gRPC code name (REST statuses are mapped with the
table the protocol implies) and the body as plain Python, so one table of cases checks that both
transports mean the same thing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

HTTP_TO_CODE = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


@dataclass
class Outcome:
    status: str
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str:
        return self.body.get("error", "")


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


class _Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RestApi(_Closing):
    name = "rest"

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)

    def close(self) -> None:
        self.client.close()

    def _outcome(self, response: httpx.Response) -> Outcome:
        return Outcome(
            HTTP_TO_CODE.get(response.status_code, str(response.status_code)), response.json()
        )

    @staticmethod
    def _model_path(name: str, version: str | None) -> str:
        return f"/v2/models/{name}" + (f"/versions/{version}" if version else "")

    def server_live(self) -> Outcome:
        return self._outcome(self.client.get("/v2/health/live"))

    def server_ready(self) -> Outcome:
        return self._outcome(self.client.get("/v2/health/ready"))

    def server_metadata(self) -> Outcome:
        return self._outcome(self.client.get("/v2"))

    def model_ready(self, name: str, version: str | None = None) -> Outcome:
        outcome = self._outcome(self.client.get(self._model_path(name, version) + "/ready"))
        if outcome.status == "UNAVAILABLE" and "ready" in outcome.body:
            outcome.status = "OK"  # REST answers 503 for a known model that is not ready
        return outcome

    def model_metadata(self, name: str, version: str | None = None) -> Outcome:
        return self._outcome(self.client.get(self._model_path(name, version)))

    def infer(
        self,
        name: str,
        version: str | None,
        inputs: list[InferInput],
        outputs: list[str] | None = None,
        request_id: str | None = None,
        raw_body: bytes | None = None,
    ) -> Outcome:
        body: dict[str, Any] = {
            "inputs": [
                {"name": i.name, "datatype": i.datatype, "shape": i.shape, "data": i.data}
                for i in inputs
            ]
        }
        if outputs is not None:
            body["outputs"] = [{"name": o} for o in outputs]
        if request_id is not None:
            body["id"] = request_id
        content = raw_body if raw_body is not None else json.dumps(body).encode()
        response = self.client.post(
            self._model_path(name, version) + "/infer",
            content=content,
            headers={"content-type": "application/json"},
        )
        outcome = self._outcome(response)
        if outcome.status == "OK":
            outcome.body["outputs"] = {
                o["name"]: {
                    "datatype": o["datatype"],
                    "shape": o["shape"],
                    "data": np.asarray(o["data"]).reshape(o["shape"]),
                }
                for o in outcome.body["outputs"]
            }
        return outcome


class GrpcApi(_Closing):
    name = "grpc"

    def __init__(self, target: str, raw: bool = True) -> None:
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.raw = raw

    def close(self) -> None:
        self.channel.close()

    def _call(self, method: str, request: Any, convert) -> Outcome:
        try:
            response = getattr(self.stub, method)(request, timeout=30)
        except grpc.RpcError as exc:
            return Outcome(exc.code().name, {"error": exc.details()})
        return Outcome("OK", convert(response))

    def server_live(self) -> Outcome:
        return self._call("ServerLive", pb.ServerLiveRequest(), lambda r: {"live": r.live})

    def server_ready(self) -> Outcome:
        return self._call("ServerReady", pb.ServerReadyRequest(), lambda r: {"ready": r.ready})

    def server_metadata(self) -> Outcome:
        return self._call(
            "ServerMetadata",
            pb.ServerMetadataRequest(),
            lambda r: {"name": r.name, "version": r.version, "extensions": list(r.extensions)},
        )

    def model_ready(self, name: str, version: str | None = None) -> Outcome:
        request = pb.ModelReadyRequest(name=name, version=version or "")
        return self._call("ModelReady", request, lambda r: {"name": name, "ready": r.ready})

    def model_metadata(self, name: str, version: str | None = None) -> Outcome:
        def convert(r: Any) -> dict[str, Any]:
            # servekit's own properties (state, error, lineage) travel in a string map over gRPC.
            body: dict[str, Any] = {
                "name": r.name,
                "versions": list(r.versions),
                "platform": r.platform,
                "inputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in r.inputs
                ],
                "outputs": [
                    {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                    for t in r.outputs
                ],
            }
            properties = _metadata_properties(r)
            for key in ("state", "version", "error"):
                if key in properties:
                    body[key] = properties[key]
            if "lineage" in properties:
                body["lineage"] = json.loads(properties["lineage"])
            return body

        request = pb.ModelMetadataRequest(name=name, version=version or "")
        return self._call("ModelMetadata", request, convert)

    def infer(
        self,
        name: str,
        version: str | None,
        inputs: list[InferInput],
        outputs: list[str] | None = None,
        request_id: str | None = None,
        raw_body: bytes | None = None,
    ) -> Outcome:
        request = pb.ModelInferRequest(
            model_name=name, model_version=version or "", id=request_id or ""
        )
        for item in inputs:
            tensor = request.inputs.add(name=item.name, datatype=item.datatype, shape=item.shape)
            if self.raw:
                request.raw_input_contents.append(_raw(item))
            else:
                values = [v.encode() if isinstance(v, str) else v for v in _flatten(item.data)]
                getattr(tensor.contents, CONTENTS_FIELD.get(item.datatype, "fp32_contents")).extend(
                    values
                )
        for out in outputs or []:
            request.outputs.add(name=out)
        return self._call("ModelInfer", request, _infer_body)


def _metadata_properties(response: Any) -> dict[str, str]:
    # Triton's ModelMetadataResponse has no `properties` field (number 6 is unknown to it), so
    # re-parse the wire bytes with an equivalent message that has the map.
    raw = response.SerializeToString()
    return dict(_PropertiesOnly.FromString(raw).properties)


def _flatten(data: Any) -> list[Any]:
    return np.asarray(data, dtype=object).reshape(-1).tolist()


def _raw(item: InferInput) -> bytes:
    if item.datatype == "BYTES":
        parts = []
        for value in _flatten(item.data):
            encoded = value.encode() if isinstance(value, str) else bytes(value)
            parts += [len(encoded).to_bytes(4, "little"), encoded]
        return b"".join(parts)
    return np.asarray(_flatten(item.data), dtype=NUMPY.get(item.datatype, np.float32)).tobytes()


def _infer_body(response: Any) -> dict[str, Any]:
    outputs = {}
    for index, tensor in enumerate(response.outputs):
        shape = list(tensor.shape)
        if response.raw_output_contents:
            raw = response.raw_output_contents[index]
            if tensor.datatype == "BYTES":
                data, offset = [], 0
                while offset < len(raw):
                    length = int.from_bytes(raw[offset : offset + 4], "little")
                    data.append(raw[offset + 4 : offset + 4 + length].decode())
                    offset += 4 + length
                array = np.asarray(data, dtype=object)
            else:
                array = np.frombuffer(raw, dtype=NUMPY[tensor.datatype])
        else:
            values = list(getattr(tensor.contents, CONTENTS_FIELD[tensor.datatype]))
            if tensor.datatype == "BYTES":
                values = [v.decode() for v in values]
            array = np.asarray(values)
        outputs[tensor.name] = {
            "datatype": tensor.datatype,
            "shape": shape,
            "data": array.reshape(shape),
        }
    body: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": outputs,
    }
    if response.id:
        body["id"] = response.id
    return body


def _build_properties_message() -> Any:
    """A message with only field 6 `map<string,string> properties`, in a private pool."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(
        name="servekit_test_props.proto", package="servekit_test", syntax="proto3"
    )
    message = file.message_type.add(name="PropertiesOnly")
    entry = message.nested_type.add(name="PropertiesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=9, label=1)
    message.field.add(
        name="properties",
        number=6,
        type=11,
        label=3,
        type_name=".servekit_test.PropertiesOnly.PropertiesEntry",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("servekit_test.PropertiesOnly")
    )


_PropertiesOnly = _build_properties_message()
