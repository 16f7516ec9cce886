"""The registry: which version serves a request, and how a miss is reported."""

from __future__ import annotations

import pytest

from servekit.core.lifecycle import ModelState
from servekit.core.registry import ModelHandle, ModelRegistry, version_key
from servekit.errors import ModelNotFound

READY = ModelState.READY
FAILED = ModelState.FAILED
LOADING = ModelState.LOADING
UNLOADED = ModelState.UNLOADED


def _registry(*models: tuple[str, str, ModelState]) -> ModelRegistry:
    registry = ModelRegistry()
    for name, version, state in models:
        registry.add(ModelHandle(name, version, "sklearn", state=state))
    return registry


@pytest.mark.parametrize(
    ("versions", "expected"),
    [
        ([("1", READY)], "1"),
        ([("1", READY), ("2", READY)], "2"),
        ([("9", READY), ("10", READY)], "10"),  # numeric, not lexicographic
        ([("10", READY), ("9", READY), ("2", READY)], "10"),
        ([("100", READY), ("20", READY), ("3", READY)], "100"),
        ([("1", READY), ("2", FAILED)], "1"),  # newest READY, not newest
        ([("9", READY), ("10", LOADING), ("11", FAILED)], "9"),
        ([("1", READY), ("2", UNLOADED)], "1"),
        ([("1", READY), ("3", READY), ("2", READY)], "3"),
        ([("1", FAILED), ("2", FAILED)], "2"),  # none ready: the newest explains why
        ([("9", LOADING), ("10", FAILED)], "10"),
        ([("beta", READY), ("2", READY)], "2"),  # numeric versions sort after labels
        ([("beta", READY), ("2", FAILED)], "beta"),
    ],
)
def test_default_version_is_the_newest_ready(versions, expected):
    registry = _registry(*[("m", v, s) for v, s in versions])
    assert registry.get("m").version == expected
    assert registry.get("m", None).version == expected
    assert registry.get("m", "").version == expected  # an empty version means "default"


def test_explicit_version_is_returned_whatever_its_state():
    registry = _registry(("m", "1", READY), ("m", "2", FAILED))
    handle = registry.get("m", "2")
    assert (handle.version, handle.state, handle.ready) == ("2", FAILED, False)
    assert registry.get("m", "1").ready


def test_unknown_model():
    registry = _registry(("iris", "1", READY))
    with pytest.raises(ModelNotFound) as info:
        registry.get("wine")
    assert str(info.value) == "model 'wine' not found"
    assert (info.value.model, info.value.version) == ("wine", None)
    assert info.value.code.http_status == 404


def test_unknown_version():
    registry = _registry(("iris", "1", READY), ("iris", "2", READY))
    with pytest.raises(ModelNotFound) as info:
        registry.get("iris", "3")
    assert str(info.value) == "model 'iris' version '3' not found"
    assert (info.value.model, info.value.version) == ("iris", "3")


def test_empty_registry():
    registry = ModelRegistry()
    assert len(registry) == 0 and registry.names() == [] and list(registry) == []
    with pytest.raises(ModelNotFound, match="model 'x' not found"):
        registry.get("x")
    with pytest.raises(ModelNotFound, match="model 'x' not found"):
        registry.versions("x")


def test_versions_names_iteration_and_length_are_ordered():
    registry = _registry(
        ("wine", "10", READY),
        ("iris", "2", READY),
        ("wine", "9", FAILED),
        ("iris", "1", READY),
        ("wine", "rc", READY),
    )
    assert registry.names() == ["iris", "wine"]
    assert registry.versions("wine") == ["rc", "9", "10"]
    assert registry.versions("iris") == ["1", "2"]
    assert [(h.name, h.version) for h in registry] == [
        ("iris", "1"),
        ("iris", "2"),
        ("wine", "rc"),
        ("wine", "9"),
        ("wine", "10"),
    ]
    assert len(registry) == 5


def test_add_replaces_the_same_version_atomically():
    registry = _registry(("m", "1", LOADING))
    assert not registry.get("m").ready
    registry.add(ModelHandle("m", "1", "sklearn", state=READY))
    assert registry.get("m").ready
    assert len(registry) == 1


@pytest.mark.parametrize(
    ("versions", "ordered"),
    [
        (["10", "9", "1"], ["1", "9", "10"]),
        (["2", "b", "a", "11"], ["a", "b", "2", "11"]),
        (["010", "9"], ["9", "010"]),
    ],
)
def test_version_key(versions, ordered):
    assert sorted(versions, key=version_key) == ordered


def test_handle_defaults():
    handle = ModelHandle("m", "1", "onnx")
    assert handle.state is LOADING and not handle.ready
    assert handle.inputs == [] and handle.outputs == [] and handle.lineage == {}
    assert handle.error is None and handle.runtime is None and handle.predict is None


def test_default_version_cache_follows_state_changes():
    from servekit.core.lifecycle import ModelState
    from servekit.core.registry import ModelHandle, ModelRegistry

    registry = ModelRegistry()
    registry.add(ModelHandle("m", "1", "p", state=ModelState.READY))
    assert registry.get("m").version == "1"
    newer = ModelHandle("m", "2", "p", state=ModelState.LOADING)
    registry.add(newer)
    assert registry.get("m").version == "1"  # a loading version takes no traffic
    newer.state = ModelState.READY
    registry.refresh("m")
    assert registry.get("m").version == "2"
