"""Framework runtimes, found by name (entry point group ``servekit.runtimes``) or import string."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from servekit.errors import ConfigError
from servekit.runtimes.base import ModelSpec, Runtime, Signature

ENTRY_POINT_GROUP = "servekit.runtimes"

# The built-ins, so a source checkout works before the package's entry points are installed.
BUILTIN_RUNTIMES = {
    "sklearn": "servekit.runtimes.sklearn:SKLearnRuntime",
    "xgboost": "servekit.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "servekit.runtimes.lightgbm:LightGBMRuntime",
    "onnx": "servekit.runtimes.onnx:ONNXRuntime",
    "torch": "servekit.runtimes.torch:TorchScriptRuntime",
    "custom": "servekit.runtimes.custom:CustomRuntime",
}

_EXTRA_FOR = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "onnx": "onnx",
    "torch": "torch",
}


def _import_string(target: str) -> type[Runtime]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    cls = getattr(module, attr)
    if not (isinstance(cls, type) and issubclass(cls, Runtime)):
        raise ConfigError(f"{target!r} is not a servekit Runtime subclass")
    return cls


def resolve_runtime(name: str) -> type[Runtime]:
    """Map a ``format`` from model.yaml to a Runtime class, importing it only now."""
    if ":" in name:
        target = name
    else:
        registered = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
        target = registered.get(name) or BUILTIN_RUNTIMES.get(name, "")
        if not target:
            known = ", ".join(sorted(set(registered) | set(BUILTIN_RUNTIMES)))
            raise ConfigError(f"unknown model format {name!r}; known formats: {known}")
    try:
        return _import_string(target)
    except ModuleNotFoundError as exc:
        extra = _EXTRA_FOR.get(name)
        hint = f" (install it with: pip install 'servekit[{extra}]')" if extra else ""
        raise ConfigError(f"format {name!r} needs the missing package {exc.name!r}{hint}") from None
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot import runtime {target!r}: {exc}") from None


__all__ = ["BUILTIN_RUNTIMES", "ModelSpec", "Runtime", "Signature", "resolve_runtime"]
