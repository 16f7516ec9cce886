"""The gRPC transport in-process: a real grpc.aio server on a free port, in a background event
loop, called with servekit's own stubs (and once with tritonclient, in the same process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import joblib
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from servekit.core.dataplane import DataPlane
from servekit.core.executor import Executor
from servekit.core.loader import ModelLoader
from servekit.core.registry import ModelRegistry
from servekit.errors import InvalidInput, ModelNotFound
from servekit.observe.metrics import Metrics
from servekit.repository import scan_repository
from servekit.settings import Settings
from servekit.transports.grpc import converters, create_grpc_server
from servekit.transports.grpc.errors import INTERNAL_MESSAGE, map_errors
from servekit.transports.grpc.stubs import SERVICE_NAME, pb2, pb2_grpc
from servekit.types import InferenceResponse, Tensor
from servekit.types.tensors import NUMPY_DTYPES, from_raw, to_raw

MAX_BYTES = 1 << 20

BAD_MODEL = textwrap.dedent(
    """
    import servekit

    class Bad(servekit.Model):
        def predict(self, inputs):
            raise ValueError("secret detail that must not reach the client")
    """
)


class BackgroundServer:
    """The DataPlane and gRPC server on an event loop in a daemon thread."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    async def _start(self) -> int:
        metrics, self.registry = Metrics(), ModelRegistry()
        self.executor = Executor(2)
        self.loader = ModelLoader(self.registry, self.executor, metrics)
        await self.loader.load_all(scan_repository(self.repo))
        self.dataplane = DataPlane(self.registry, metrics)
        self.dataplane.loading_complete = True
        settings = Settings(host="127.0.0.1", grpc_port=0, max_request_bytes=MAX_BYTES)
        self.server, port = create_grpc_server(self.dataplane, settings)
        await self.server.start()
        return port

    async def _stop(self) -> None:
        await self.server.stop(None)
        await self.loader.unload_all()

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        self.port = self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.executor.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LogisticRegression]:
    repo = tmp_path_factory.mktemp("grpc") / "models"
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    (repo / "iris" / "1").mkdir(parents=True)
    joblib.dump(model, repo / "iris" / "1" / "model.joblib")
    (repo / "bad").mkdir()
    (repo / "bad" / "model.py").write_text(BAD_MODEL)
    return repo, model


@pytest.fixture(scope="module")
def background(iris_model: tuple[Path, LogisticRegression]) -> Iterator[BackgroundServer]:
    with BackgroundServer(iris_model[0]) as server:
        yield server


@pytest.fixture(scope="module")
def channel(background: BackgroundServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{background.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Any:
    return pb2_grpc.GRPCInferenceServiceStub(channel)


X = load_iris(return_X_y=True)[0][:10]


def iris_request(*, raw: bool, rows: np.ndarray = X, **fields: Any) -> Any:
    request = pb2.ModelInferRequest(model_name="iris", **fields)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=list(rows.shape))
    if raw:
        request.raw_input_contents.append(rows.astype("<f8").tobytes())
    else:
        tensor.contents.fp64_contents.extend(rows.ravel().tolist())
    return request


def outputs_of(response: Any) -> dict[str, np.ndarray]:
    """Output arrays, whichever representation the server chose."""
    result = {}
    for i, out in enumerate(response.outputs):
        if response.raw_output_contents:
            raw = response.raw_output_contents[i]
            data = from_raw(out.name, out.datatype, list(out.shape), raw)
        else:
            field = converters.contents_field(out.datatype)
            values = list(getattr(out.contents, field))
            # An explicit dtype: numpy would read large UINT64 Python ints as float64.
            dtype = None if out.datatype == "BYTES" else NUMPY_DTYPES[out.datatype]
            data = np.asarray(values, dtype=dtype)
        result[out.name] = data.reshape(list(out.shape))
    return result


def rpc_error(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=10)
    return info.value


# -- health and metadata ---------------------------------------------------------------------


def test_server_live_ready_and_metadata(stub: Any) -> None:
    assert stub.ServerLive(pb2.ServerLiveRequest()).live
    assert stub.ServerReady(pb2.ServerReadyRequest()).ready
    metadata = stub.ServerMetadata(pb2.ServerMetadataRequest())
    assert metadata.name == "servekit" and metadata.version
    assert "binary_tensor_data" in metadata.extensions


def test_model_ready(stub: Any) -> None:
    assert stub.ModelReady(pb2.ModelReadyRequest(name="iris")).ready
    assert stub.ModelReady(pb2.ModelReadyRequest(name="iris", version="1")).ready
    error = rpc_error(stub.ModelReady, pb2.ModelReadyRequest(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND and "nope" in error.details()
    error = rpc_error(stub.ModelReady, pb2.ModelReadyRequest(name="iris", version="9"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_model_metadata(stub: Any) -> None:
    metadata = stub.ModelMetadata(pb2.ModelMetadataRequest(name="iris"))
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("iris", ["1"], "sklearn")
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("input-0", "FP64", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("predict", "INT64", [-1]),
        ("predict_proba", "FP64", [-1, 3]),
    ]
    assert metadata.properties["state"] == "READY" and metadata.properties["version"] == "1"
    error = rpc_error(stub.ModelMetadata, pb2.ModelMetadataRequest(name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_health_service_follows_readiness(channel: grpc.Channel, background: Any) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    serving = health_pb2.HealthCheckResponse.SERVING
    for service in ("", SERVICE_NAME):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == serving
    error = rpc_error(health.Check, health_pb2.HealthCheckRequest(service="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    background.dataplane.loading_complete = False
    try:
        status = health.Check(health_pb2.HealthCheckRequest()).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        background.dataplane.loading_complete = True
    watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)
    assert next(watch).status == serving
    watch.cancel()


# -- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_infer_matches_the_model(stub: Any, iris_model: Any, raw: bool) -> None:
    model = iris_model[1]
    response = stub.ModelInfer(iris_request(raw=raw, id="req-1"))
    assert (response.model_name, response.model_version, response.id) == ("iris", "1", "req-1")
    assert bool(response.raw_output_contents) is raw  # answered in the client's representation
    outputs = outputs_of(response)
    np.testing.assert_array_equal(outputs["predict"], model.predict(X))
    np.testing.assert_allclose(outputs["predict_proba"], model.predict_proba(X), rtol=1e-12)


@pytest.mark.parametrize("raw", [True, False], ids=["raw-input", "typed-input"])
def test_binary_data_output_parameter_overrides(stub: Any, raw: bool) -> None:
    request = iris_request(raw=raw)
    request.parameters[converters.RAW_OUTPUT_PARAMETER].bool_param = not raw
    response = stub.ModelInfer(request)
    assert bool(response.raw_output_contents) is (not raw)
    assert outputs_of(response)["predict"].shape == (len(X),)


def test_requested_output_with_parameters(stub: Any) -> None:
    request = iris_request(raw=True)
    wanted = request.outputs.add(name="predict_proba")
    wanted.parameters["precision"].int64_param = 3
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["predict_proba"]
    assert response.outputs[0].parameters["precision"].int64_param == 3
    assert len(response.raw_output_contents) == 1


# -- errors ----------------------------------------------------------------------------------


def test_unknown_model_is_not_found(stub: Any) -> None:
    error = rpc_error(stub.ModelInfer, pb2.ModelInferRequest(model_name="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "model 'nope' not found" in error.details()


def _bad_datatype(request: Any) -> None:
    request.inputs[0].datatype = "FP99"


def _bad_shape(request: Any) -> None:
    request.inputs[0].shape[:] = [10, 5]


def _negative_dim(request: Any) -> None:
    request.inputs[0].shape[:] = [-1, 4]


def _wrong_contents_field(request: Any) -> None:
    request.inputs[0].contents.fp32_contents.append(1.0)


def _raw_and_contents(request: Any) -> None:
    request.raw_input_contents.append(X.tobytes())


def _bytes_for_fp64(request: Any) -> None:
    request.inputs[0].datatype = "BYTES"
    request.inputs[0].contents.Clear()
    request.inputs[0].contents.bytes_contents.extend([b"x"] * X.size)


@pytest.mark.parametrize(
    "raw, spoil, expected",
    [
        (False, _bad_datatype, "unknown datatype 'FP99'"),
        (True, _bad_datatype, "unknown datatype 'FP99'"),
        (False, _bad_shape, "shape [10, 5] needs 50 elements"),
        (True, _bad_shape, "shape [10, 5] of FP64 needs 400 bytes"),
        (False, _negative_dim, "non-negative integers, got [-1, 4]"),
        (True, _negative_dim, "non-negative integers, got [-1, 4]"),
        (False, _wrong_contents_field, "FP64 takes fp64_contents, got fp32_contents"),
        (False, _raw_and_contents, "raw_input_contents"),
        (False, _bytes_for_fp64, "expected datatype FP64, got BYTES"),
    ],
    ids=[
        "datatype-typed",
        "datatype-raw",
        "shape-typed",
        "shape-raw",
        "negative-typed",
        "negative-raw",
        "field",
        "both",
        "kind",
    ],  # fmt: skip
)
def test_invalid_inputs_are_invalid_argument(stub: Any, raw: bool, spoil: Any, expected: str):
    request = iris_request(raw=raw)
    spoil(request)
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input-0" in error.details() and expected in error.details(), error.details()


def test_raw_count_must_match_inputs(stub: Any) -> None:
    request = iris_request(raw=True)
    request.raw_input_contents.append(b"")
    error = rpc_error(stub.ModelInfer, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "2 entries for 1 inputs" in error.details()


def test_failing_model_is_internal_and_server_keeps_serving(stub: Any) -> None:
    request = pb2.ModelInferRequest(model_name="bad")
    request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1)
    for _ in range(2):
        error = rpc_error(stub.ModelInfer, request)
        assert error.code() == grpc.StatusCode.INTERNAL
        assert "'bad'" in error.details() and "ValueError" in error.details()
        assert "secret" not in error.details() and "Traceback" not in error.details()
        assert stub.ModelInfer(iris_request(raw=True)).outputs


def test_oversized_message_is_resource_exhausted(stub: Any) -> None:
    rows = np.zeros((MAX_BYTES // 32 + 10, 4))
    error = rpc_error(stub.ModelInfer, iris_request(raw=True, rows=rows))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_unexpected_errors_are_internal_without_details() -> None:
    class Aborted(Exception):
        pass

    class Context:
        async def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.code, self.details = code, details
            raise Aborted

    class Servicer:
        @map_errors
        async def Boom(self, request: Any, context: Any) -> Any:
            raise RuntimeError("secret")

        @map_errors
        async def Missing(self, request: Any, context: Any) -> Any:
            raise ModelNotFound("m")

    for method, code, details in [
        ("Boom", grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE),
        ("Missing", grpc.StatusCode.NOT_FOUND, "model 'm' not found"),
    ]:
        context = Context()
        with pytest.raises(Aborted):
            asyncio.run(getattr(Servicer(), method)(None, context))
        assert (context.code, context.details) == (code, details)


# -- tritonclient, in the same process as servekit's stubs -----------------------------------


def test_tritonclient_in_the_same_process(background: BackgroundServer, iris_model: Any) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(f"127.0.0.1:{background.port}")
    try:
        assert client.is_server_ready() and client.is_model_ready("iris")
        assert client.get_model_metadata("iris").platform == "sklearn"
        tensor = triton.InferInput("input-0", list(X.shape), "FP64")
        tensor.set_data_from_numpy(X)
        result = client.infer("iris", [tensor])
        np.testing.assert_array_equal(result.as_numpy("predict"), iris_model[1].predict(X))
    finally:
        client.close()


@pytest.mark.parametrize("first", ["tritonclient.grpc", "servekit.transports.grpc.stubs"])
def test_stubs_and_tritonclient_import_in_either_order(first: str) -> None:
    """Both define inference.* messages; servekit's live in a private descriptor pool."""
    modules = ["tritonclient.grpc", "servekit.transports.grpc.stubs"]
    modules.sort(key=lambda name: name != first)
    code = "; ".join(f"import {name}" for name in modules)
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, timeout=60, cwd=root)


# -- converters ------------------------------------------------------------------------------

ARRAYS = {
    "BOOL": np.array([[True, False], [False, True]]),
    "UINT8": np.array([0, 1, 255], np.uint8),
    "UINT16": np.array([0, 65535], np.uint16),
    "UINT32": np.array([0, 128, 2**32 - 1], np.uint32),
    "UINT64": np.array([0, 2**63, 2**64 - 1], np.uint64),
    "INT8": np.array([-128, 0, 127], np.int8),
    "INT16": np.array([-32768, 32767], np.int16),
    "INT32": np.array([[-(2**31), 5], [300, 2**31 - 1]], np.int32),
    "INT64": np.array([-(2**63), -1, 0, 2**63 - 1], np.int64),
    "FP16": np.array([0.5, -1.25, 65504], np.float16),
    "FP32": np.array([[1.5, -2.25, np.inf]], np.float32),
    "FP64": np.array([1e300, -0.0, 3.25], np.float64),
    "BYTES": np.array([b"abc", b"", "\u00e9".encode()], dtype=object),
}
TYPED = [d for d in ARRAYS if d != "FP16"]


def _request(datatype: str, array: np.ndarray, *, raw: bool) -> Any:
    request = pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=list(array.shape))
    if raw:
        request.raw_input_contents.append(to_raw(array, datatype))
    else:
        getattr(tensor.contents, converters.contents_field(datatype)).extend(array.ravel().tolist())
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
@pytest.mark.parametrize("datatype", list(ARRAYS))
def test_every_datatype_round_trips(datatype: str, raw: bool) -> None:
    array = ARRAYS[datatype]
    if not raw and datatype == "FP16":  # no typed field: raw only
        request = pb2.ModelInferRequest()
        request.inputs.add(name="x", datatype="FP16", shape=[0])
        with pytest.raises(InvalidInput, match="input 'x': FP16 data must be sent in raw"):
            converters.to_request(request)
        return
    request = converters.to_request(_request(datatype, array, raw=raw))
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, array.shape)
    assert tensor.data.dtype == array.dtype
    np.testing.assert_array_equal(tensor.data, array)

    response = InferenceResponse("m", [Tensor("y", datatype, array)], model_version="1")
    message = converters.from_response(response, raw=raw)
    assert bool(message.raw_output_contents) is (raw or datatype == "FP16")
    decoded = outputs_of(pb2.ModelInferResponse.FromString(message.SerializeToString()))["y"]
    np.testing.assert_array_equal(decoded.astype(array.dtype), array)


def test_raw_inputs_are_views_and_typed_outputs_match_protobuf() -> None:
    request = converters.to_request(_request("FP32", ARRAYS["FP32"], raw=True))
    assert not request.inputs[0].data.flags.writeable  # np.frombuffer over the message bytes
    for datatype in TYPED:
        array = ARRAYS[datatype]
        fast = pb2.InferTensorContents()
        converters.fill_contents(fast, Tensor("y", datatype, array))
        slow = pb2.InferTensorContents()
        values = [bytes(v) for v in array.ravel()] if datatype == "BYTES" else array.ravel()
        getattr(slow, converters.contents_field(datatype)).extend(list(values))
        assert fast.SerializeToString() == slow.SerializeToString(), datatype


def test_typed_values_out_of_range_are_invalid() -> None:
    request = pb2.ModelInferRequest()
    request.inputs.add(name="x", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(InvalidInput, match="input 'x': values out of range for INT8"):
        converters.to_request(request)


def test_parameters_round_trip() -> None:
    values = {
        "flag": True,
        "count": -3,
        "big": 2**63 + 5,
        "ratio": 0.25,
        "name": "abc",
        "np": np.int32(7),
        "listed": [1, 2],
        "skipped": None,
    }
    message = pb2.ModelInferResponse()
    converters.set_parameters(message.parameters, values)
    assert message.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"
    assert message.parameters["flag"].WhichOneof("parameter_choice") == "bool_param"
    assert converters.to_parameters(message.parameters) == {
        "flag": True,
        "count": -3,
        "big": 2**63 + 5,
        "ratio": 0.25,
        "name": "abc",
        "np": 7,
        "listed": "[1, 2]",
    }
