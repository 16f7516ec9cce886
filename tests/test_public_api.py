"""The public API is exactly ``servekit.__all__``: guarded so it changes only on purpose."""

from __future__ import annotations

import importlib
import types

import servekit

EXPECTED = {
    "InferenceRequest",
    "InferenceResponse",
    "Model",
    "ModelSpec",
    "RequestedOutput",
    "Runtime",
    "ServekitError",
    "Settings",
    "Signature",
    "Tensor",
    "TensorSpec",
    "Transformer",
    "__version__",
}


def test_all_is_the_expected_set():
    assert set(servekit.__all__) == EXPECTED
    assert len(servekit.__all__) == len(EXPECTED), "no duplicates in __all__"


def test_every_name_in_all_is_importable():
    module = importlib.import_module("servekit")
    for name in servekit.__all__:
        assert hasattr(module, name), name
        namespace: dict = {}
        exec(f"from servekit import {name}", namespace)  # the import users write
        assert namespace[name] is getattr(servekit, name)


def test_no_private_names_in_all():
    for name in servekit.__all__:
        is_dunder = name.startswith("__") and name.endswith("__")
        assert is_dunder or not name.startswith("_"), name


def test_every_public_member_is_exported():
    """Anything public at the top level (other than submodules) must be in ``__all__``."""
    public = {
        name
        for name, value in vars(servekit).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == EXPECTED - {"__version__"}


def test_exported_objects_come_from_servekit():
    for name in EXPECTED - {"__version__"}:
        assert getattr(servekit, name).__module__.startswith("servekit."), name


def test_version_is_a_string():
    assert isinstance(servekit.__version__, str)
    assert servekit.__version__.count(".") >= 2
