"""Custom Python models: a ``model.py`` with a :class:`servekit.Model` subclass."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servekit.errors import ConfigError
from servekit.model import Model
from servekit.runtimes.base import Runtime, Signature

DEFAULT_OUTPUT = "output-0"


def _load_model_class(spec_path: Any, module_name: str, class_name: str | None) -> type[Model]:
    spec = importlib.util.spec_from_file_location(module_name, spec_path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{spec_path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if class_name:
        cls = getattr(module, class_name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Model)):
            raise ConfigError(f"{spec_path}: no servekit.Model subclass named {class_name!r}")
        return cls
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, Model)
        and obj is not Model
        and obj.__module__ == module_name
    ]
    if len(found) != 1:
        raise ConfigError(
            f"{spec_path}: expected exactly one servekit.Model subclass, found {len(found)}; "
            "name one with 'parameters: {class: Name}' in model.yaml"
        )
    return found[0]


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


class CustomRuntime(Runtime):
    platform = "servekit_custom"

    def load(self) -> Any:
        parameters = dict(self.spec.parameters)
        class_name = parameters.pop("class", None)
        module_name = f"servekit_user_models.{self.spec.name}.v{self.spec.version}"
        cls = _load_model_class(self.spec.path, module_name, class_name)
        self._model = cls(self.spec.name, self.spec.path.parent, parameters)
        hooks = (cls.preprocess, cls.predict, cls.postprocess)
        self._is_async = any(inspect.iscoroutinefunction(h) for h in hooks)
        # Choose once whether predict runs on the event loop or in the thread pool.
        self.predict = self._predict_async if self._is_async else self._predict_sync  # type: ignore[method-assign]
        return self._model.load()

    def predict(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> Any:
        raise RuntimeError("load() must run before predict()")

    def _predict_sync(self, inputs, outputs=None, parameters=None) -> dict[str, np.ndarray]:
        model = self._model
        result = model.postprocess(model.predict(model.preprocess(dict(inputs))))
        return _as_outputs(result)

    async def _predict_async(self, inputs, outputs=None, parameters=None) -> dict[str, np.ndarray]:
        model = self._model
        data = await _maybe_await(model.preprocess(dict(inputs)))
        result = await _maybe_await(model.predict(data))
        return _as_outputs(await _maybe_await(model.postprocess(result)))

    def signature(self) -> Signature:
        cls = type(self._model)
        # Undeclared tensors stay empty: the core then passes inputs through unchecked.
        return Signature(list(cls.inputs or []), list(cls.outputs or []))

    def unload(self) -> Any:
        sys.modules.pop(f"servekit_user_models.{self.spec.name}.v{self.spec.version}", None)
        return self._model.unload()


def _as_outputs(result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, Mapping):
        return {str(k): np.asarray(v) for k, v in result.items()}
    return {DEFAULT_OUTPUT: np.asarray(result)}
