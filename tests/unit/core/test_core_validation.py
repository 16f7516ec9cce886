"""Requests checked against a model's signature; runtime answers shaped into declared tensors."""

from __future__ import annotations

import numpy as np
import pytest

from servekit.core.validation import build_outputs, check_requested_outputs, validate_inputs
from servekit.errors import InferenceError, InvalidInput
from servekit.types.inference import RequestedOutput
from servekit.types.metadata import TensorSpec
from servekit.types.tensors import NUMPY_DTYPES, Tensor

X = TensorSpec("x", "FP32", (-1, 3))
IDS = TensorSpec("ids", "INT64", (-1,))
TEXT = TensorSpec("text", "BYTES", (1,))
MASK = TensorSpec("mask", "BOOL", (2, 2))
DECLARED = [X, IDS]


def _tensor(name: str, datatype: str, shape: tuple[int, ...]) -> Tensor:
    dtype = NUMPY_DTYPES[datatype]
    if datatype == "BYTES":
        data = np.full(shape, b"a", dtype=object)
    else:
        data = np.ones(shape, dtype=dtype)
    return Tensor(name, datatype, data)


def _invalid(declared, tensors, model="m") -> str:
    with pytest.raises(InvalidInput) as info:
        validate_inputs(model, declared, tensors)
    return str(info.value)


# -- validate_inputs ------------------------------------------------------------------------------


def test_valid_inputs_come_back_in_declared_order():
    tensors = [_tensor("ids", "INT64", (4,)), _tensor("x", "FP32", (4, 3))]
    arrays = validate_inputs("m", DECLARED, tensors)
    assert list(arrays) == ["x", "ids"]
    assert arrays["x"].dtype == np.float32 and arrays["x"].shape == (4, 3)
    assert arrays["ids"] is tensors[0].data  # no copy when nothing needs casting


def test_no_declared_inputs_passes_everything_through():
    tensors = [_tensor("b", "BYTES", (2,)), _tensor("a", "FP16", (1, 1))]
    arrays = validate_inputs("m", [], tensors)
    assert list(arrays) == ["b", "a"]
    assert arrays["a"] is tensors[1].data and arrays["b"] is tensors[0].data


@pytest.mark.parametrize("declared", [[], DECLARED])
def test_duplicate_input(declared):
    tensors = [_tensor("x", "FP32", (1, 3)), _tensor("x", "FP32", (1, 3))]
    assert "input 'x' is given more than once" in _invalid(declared, tensors)


def test_unknown_input_lists_the_model_inputs():
    tensors = [
        _tensor("x", "FP32", (1, 3)),
        _tensor("ids", "INT64", (1,)),
        _tensor("z", "FP32", (1,)),
    ]
    message = _invalid(DECLARED, tensors, model="iris")
    assert "model 'iris' has no input 'z'" in message
    assert "ids, x" in message


def test_missing_input():
    message = _invalid(DECLARED, [_tensor("x", "FP32", (1, 3))], model="iris")
    assert message == "model 'iris' input 'ids' is missing from the request"


@pytest.mark.parametrize(
    ("spec", "given"),
    [
        (TensorSpec("x", "FP32", (-1,)), "BYTES"),
        (TensorSpec("x", "FP32", (-1,)), "BOOL"),
        (TensorSpec("x", "INT64", (-1,)), "BYTES"),
        (TensorSpec("x", "BYTES", (-1,)), "FP32"),
        (TensorSpec("x", "BYTES", (-1,)), "INT8"),
        (TensorSpec("x", "BOOL", (-1,)), "UINT8"),
        (TensorSpec("x", "BOOL", (-1,)), "BYTES"),
    ],
)
def test_datatype_kind_mismatch_says_what_was_expected(spec, given):
    message = _invalid([spec], [_tensor("x", given, (2,))], model="iris")
    assert f"model 'iris' input 'x': expected datatype {spec.datatype}, got {given}" == message


@pytest.mark.parametrize(
    ("declared", "given"),
    [
        ("FP64", "FP32"),
        ("FP32", "FP64"),
        ("FP32", "FP16"),
        ("FP32", "INT64"),
        ("INT64", "INT32"),
        ("INT32", "UINT8"),
        ("UINT16", "UINT8"),
        ("FP16", "INT8"),
    ],
)
def test_numeric_inputs_are_cast_to_the_declared_datatype(declared, given):
    tensor = Tensor("x", given, np.array([1, 2, 3], dtype=NUMPY_DTYPES[given]))
    arrays = validate_inputs("m", [TensorSpec("x", declared, (3,))], [tensor])
    assert arrays["x"].dtype == NUMPY_DTYPES[declared]
    assert arrays["x"].tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    ("declared", "given", "values"),
    [
        ("UINT8", "INT64", [1, 300]),  # would wrap to 44
        ("UINT8", "INT32", [-1]),  # would wrap to 255
        ("INT8", "UINT16", [200]),
        ("INT32", "FP32", [1.5]),  # would truncate to 1
        ("INT64", "FP64", [float("nan")]),
        ("INT32", "FP64", [1e20]),
        ("UINT32", "FP32", [-2.0]),
        ("FP16", "FP64", [1e300]),  # would overflow to inf
        ("FP32", "FP64", [-1e300]),
    ],
)
def test_numeric_cast_that_would_change_values_is_refused(declared, given, values):
    tensor = Tensor("x", given, np.array(values, dtype=NUMPY_DTYPES[given]))
    message = _invalid([TensorSpec("x", declared, (-1,))], [tensor], model="iris")
    assert message == (
        f"model 'iris' input 'x': {given} values do not fit the declared datatype {declared}"
    )


def test_numeric_cast_of_integral_floats_to_int_is_exact():
    tensor = Tensor("x", "FP64", np.array([1.0, -2.0, 300.0]))
    arrays = validate_inputs("m", [TensorSpec("x", "INT16", (3,))], [tensor])
    assert arrays["x"].dtype == np.int16 and arrays["x"].tolist() == [1, -2, 300]


def test_float_narrowing_rounds_but_is_allowed():
    tensor = Tensor("x", "FP64", np.array([0.1, float("nan")]))
    arrays = validate_inputs("m", [TensorSpec("x", "FP32", (2,))], [tensor])
    assert arrays["x"].dtype == np.float32
    assert arrays["x"][0] == np.float32(0.1) and np.isnan(arrays["x"][1])


@pytest.mark.parametrize(
    ("declared_shape", "shape", "fits"),
    [
        ((-1, 3), (5, 3), True),
        ((-1, 3), (0, 3), True),
        ((-1, -1), (2, 7), True),
        ((2, 3), (2, 3), True),
        ((), (), True),
        ((-1, 3), (5, 4), False),  # fixed dim differs
        ((2, 3), (3, 3), False),
        ((-1, 3), (15,), False),  # rank too small
        ((-1,), (5, 1), False),  # rank too large
        ((-1, 3), (1, 3, 1), False),
        ((), (1,), False),
    ],
)
def test_shape_rank_and_fixed_dims_with_wildcards(declared_shape, shape, fits):
    spec = TensorSpec("x", "FP32", declared_shape)
    tensor = _tensor("x", "FP32", shape)
    if fits:
        assert validate_inputs("m", [spec], [tensor])["x"].shape == shape
    else:
        message = _invalid([spec], [tensor], model="iris")
        assert message == (
            f"model 'iris' input 'x': expected shape {list(declared_shape)}, got {list(shape)}"
        )


def test_bytes_and_bool_inputs_are_accepted_unchanged():
    tensors = [_tensor("text", "BYTES", (1,)), _tensor("mask", "BOOL", (2, 2))]
    arrays = validate_inputs("m", [TEXT, MASK], tensors)
    assert arrays["text"] is tensors[0].data and arrays["mask"] is tensors[1].data


# -- check_requested_outputs ----------------------------------------------------------------------

OUT = [TensorSpec("label", "INT32", (-1,)), TensorSpec("proba", "FP32", (-1, 3))]


@pytest.mark.parametrize("declared", [[], OUT])
def test_no_requested_outputs_means_all(declared):
    assert check_requested_outputs("m", declared, []) is None


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        (["proba"], ["proba"]),
        (["proba", "label"], ["proba", "label"]),
        (["label"], ["label"]),
    ],
)
def test_requested_outputs_that_exist(requested, expected):
    outputs = [RequestedOutput(name) for name in requested]
    assert check_requested_outputs("m", OUT, outputs) == expected


def test_unknown_requested_output_lists_the_outputs():
    with pytest.raises(InvalidInput) as info:
        check_requested_outputs("iris", OUT, [RequestedOutput("label"), RequestedOutput("nope")])
    assert str(info.value) == "model 'iris' has no output 'nope'; its outputs are: label, proba"


def test_requested_outputs_without_declared_outputs_are_not_checked():
    assert check_requested_outputs("m", [], [RequestedOutput("anything")]) == ["anything"]


# -- build_outputs ------------------------------------------------------------------------------


def test_outputs_in_declared_order_then_extras_cast_to_declared_types():
    produced = {
        "extra": np.array([1.5]),
        "proba": np.array([[0.1, 0.2, 0.7]]),  # float64 declared FP32
        "label": np.array([2], dtype=np.int64),  # int64 declared INT32
    }
    outputs = build_outputs("m", OUT, produced, [])
    assert [o.name for o in outputs] == ["label", "proba", "extra"]
    label, proba, extra = outputs
    assert (label.datatype, label.data.dtype, label.data.tolist()) == ("INT32", np.int32, [2])
    assert (proba.datatype, proba.data.dtype) == ("FP32", np.float32)
    np.testing.assert_allclose(proba.data, [[0.1, 0.2, 0.7]], rtol=1e-6)
    assert (extra.datatype, extra.data.dtype) == ("FP64", np.float64)  # inferred, not cast
    assert all(o.parameters == {} for o in outputs)


def test_outputs_without_declared_signature_infer_datatypes():
    produced = {"y": [1, 2], "s": np.array(["a", "b"]), "b": np.array([True])}
    outputs = build_outputs("m", [], produced, [])
    assert [(o.name, o.datatype) for o in outputs] == [
        ("y", "INT64"),
        ("s", "BYTES"),
        ("b", "BOOL"),
    ]


def test_requested_subset_keeps_declared_order_and_carries_parameters():
    produced = {"label": np.array([1]), "proba": np.array([[0.2, 0.3, 0.5]])}
    requested = [
        RequestedOutput("proba", {"binary_data": True}),
    ]
    outputs = build_outputs("m", OUT, produced, requested)
    assert [o.name for o in outputs] == ["proba"]
    assert outputs[0].parameters == {"binary_data": True}
    assert outputs[0].parameters is not requested[0].parameters  # copied, not shared

    both = build_outputs("m", OUT, produced, [RequestedOutput("proba"), RequestedOutput("label")])
    assert [o.name for o in both] == ["label", "proba"]


def test_declared_output_not_produced_is_the_models_fault():
    produced = {"label": np.array([1])}
    with pytest.raises(InferenceError) as info:
        build_outputs("iris", OUT, produced, [RequestedOutput("proba")])
    assert str(info.value) == "model 'iris' did not produce the requested output 'proba'"


def test_undeclared_output_not_produced_is_the_clients_mistake():
    with pytest.raises(InvalidInput) as info:
        build_outputs("m", [], {"label": np.array([1])}, [RequestedOutput("proba")])
    assert "did not produce the requested output 'proba'" in str(info.value)


def test_declared_output_not_produced_is_omitted_when_not_requested():
    outputs = build_outputs("m", OUT, {"proba": np.zeros((1, 3))}, [])
    assert [o.name for o in outputs] == ["proba"]


@pytest.mark.parametrize(
    ("declared", "produced", "expected"),
    [
        ("BYTES", np.array(["cat", "dog"]), [b"cat", b"dog"]),
        ("BYTES", np.array([1, 2]), [b"1", b"2"]),
        ("FP64", np.array([1, 2], dtype=np.int8), [1.0, 2.0]),
        ("UINT8", np.array([1.0, 2.0]), [1, 2]),
        ("BOOL", np.array([0, 1]), [False, True]),
    ],
)
def test_outputs_cast_to_every_declared_kind(declared, produced, expected):
    [output] = build_outputs("m", [TensorSpec("y", declared, (-1,))], {"y": produced}, [])
    assert output.datatype == declared
    assert output.data.tolist() == expected


def test_output_that_cannot_be_cast_is_the_models_fault():
    with pytest.raises(InferenceError) as info:
        build_outputs("iris", [TensorSpec("y", "FP32", (-1,))], {"y": np.array(["abc"])}, [])
    assert "model 'iris' output 'y'" in str(info.value)
    assert "cannot convert to FP32" in str(info.value)


def test_output_with_unsupported_dtype_is_the_models_fault():
    with pytest.raises(InferenceError, match="model 'm' output 'z'"):
        build_outputs("m", [], {"z": np.array([1j])}, [])


@pytest.mark.parametrize("produced", [[np.array([1])], np.array([1]), None, "y"])
def test_runtime_must_return_a_mapping(produced):
    with pytest.raises(InferenceError, match="model 'm' returned .*, not a mapping"):
        build_outputs("m", OUT, produced, [])
