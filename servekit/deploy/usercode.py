"""Load user classes named ``"module:Class"`` or ``"file.py:Class"`` (relative to the spec)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from servekit.errors import ConfigError


def load_class(reference: str, folder: Path, where: str) -> type:
    """The class ``reference`` names; ConfigError naming ``where`` when it cannot be loaded."""
    module_name, _, class_name = reference.rpartition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{where}: expected 'module:Class' or 'file.py:Class', got {reference!r}")
    try:
        module = _module(module_name, folder)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: any import failure is a spec error
        raise ConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
    found: Any = getattr(module, class_name, None)
    if not isinstance(found, type):
        raise ConfigError(f"{where}: {module_name!r} has no class {class_name!r}")
    return found


def _module(name: str, folder: Path) -> Any:
    if name.endswith(".py"):
        path = (folder / name).resolve()
        if not path.is_file():
            raise ConfigError(f"file {str(path)!r} not found")
        unique = f"servekit_user_{abs(hash(str(path)))}_{int(path.stat().st_mtime_ns)}"
        spec = importlib.util.spec_from_file_location(unique, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return importlib.import_module(name)


def import_module(name: str, folder: Path) -> Any:
    """User code by module name, or a ``file.py`` relative to ``folder`` (user functions, such
    as a graph's combiner)."""
    return _module(name, folder)


def load_transformer(reference: str, options: dict[str, Any], folder: Path, where: str) -> Any:
    """An instance of the ``servekit.Transformer`` subclass ``reference`` names, made with
    ``options``; ConfigError naming ``where`` (the spec field) for anything wrong."""
    from servekit.deploy.transformer import Transformer

    cls = load_class(reference, folder, f"{where}.class")
    if not issubclass(cls, Transformer):
        raise ConfigError(f"{where}.class: {cls.__name__} is not a servekit.Transformer")
    try:
        return cls(**options)
    except Exception as exc:  # noqa: BLE001 - user code
        raise ConfigError(f"{where}.options: {type(exc).__name__}: {exc}") from None
