"""Reference data: the rows a model's live traffic is compared with.

A reference is a file or fsspec URI: ``.npy`` (a 2-D numeric array), ``.csv`` (a header row of
feature names) or ``.parquet``. Categorical columns given as strings are encoded as float codes
(in sorted order, kept in ``categories``) so every detector works on one float64 matrix.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import numpy as np

from servekit.errors import ConfigError

FEATURE_TYPES = ("numeric", "categorical")


@dataclass
class Reference:
    features: np.ndarray
    """(n, d) float64; categorical columns encoded as float codes."""
    names: list[str]
    types: list[str]
    """"numeric" or "categorical" per column."""
    targets: np.ndarray | None = None
    """Optional labels (CBPE calibration, concept drift)."""
    predictions: np.ndarray | None = None
    """Optional model outputs on the reference (output drift; probabilities for CBPE)."""
    categories: dict[str, list[str]] = field(default_factory=dict)
    """For string categorical columns: the label of each code."""

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features, dtype=np.float64)
        if self.features.ndim == 1:
            self.features = self.features.reshape(-1, 1)
        if self.features.ndim != 2 or self.features.shape[0] == 0:
            raise ConfigError(f"reference must be a non-empty 2-D table, got {self.features.shape}")
        width = self.features.shape[1]
        if len(self.names) != width or len(self.types) != width:
            raise ConfigError(
                f"reference has {width} columns but {len(self.names)} names and "
                f"{len(self.types)} types"
            )
        bad = sorted({t for t in self.types if t not in FEATURE_TYPES})
        if bad:
            raise ConfigError(f"feature types must be numeric or categorical, got {bad}")
        if not np.all(np.isfinite(self.features)):
            raise ConfigError("reference features contain NaN or infinite values")

    @property
    def size(self) -> int:
        return int(self.features.shape[0])

    @property
    def width(self) -> int:
        return int(self.features.shape[1])


def load_reference(
    source: str | Path,
    *,
    names: list[str] | None = None,
    types: list[str] | dict[str, str] | None = None,
    target: str | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Reference:
    """Read a reference from a path or URI (``.npy``, ``.csv``, ``.parquet``).

    ``names`` names the columns of a ``.npy`` file, or picks (in order) the feature columns of a
    CSV/Parquet file (default: every column but ``target``). ``types`` is a list, or a mapping
    from name to type for the columns that are not numeric; string columns are categorical.
    """
    text = str(source)
    suffix = Path(text.split("?", 1)[0]).suffix.lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise ConfigError(
            f"reference {text!r}: unsupported format {suffix or '(none)'}; use "
            f"{', '.join(sorted(_READERS))}"
        )
    try:
        with fsspec.open(text, "rb", **(storage_options or {})) as handle:
            payload = handle.read()
    except FileNotFoundError:
        raise ConfigError(f"reference {text!r} not found") from None
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"reference {text!r} could not be read: {exc}") from None
    columns, targets = reader(payload, text, names, target)
    return _assemble(columns, targets, types, text)


Columns = dict[str, np.ndarray]


def _read_npy(
    payload: bytes, source: str, names: list[str] | None, target: str | None
) -> tuple[Columns, np.ndarray | None]:
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError as exc:
        raise ConfigError(f"reference {source!r} is not a numeric .npy array: {exc}") from None
    if target is not None:
        raise ConfigError(f"reference {source!r}: target needs a CSV or Parquet file")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ConfigError(f"reference {source!r} must be a 2-D numeric array, got {array.shape}")
    labels = names or [f"x{i}" for i in range(array.shape[1])]
    if len(labels) != array.shape[1]:
        raise ConfigError(
            f"reference {source!r} has {array.shape[1]} columns but {len(labels)} names"
        )
    return {n: array[:, i] for i, n in enumerate(labels)}, None


def _read_csv(
    payload: bytes, source: str, names: list[str] | None, target: str | None
) -> tuple[Columns, np.ndarray | None]:
    rows = list(csv.reader(io.StringIO(payload.decode("utf-8-sig"))))
    rows = [r for r in rows if r]
    if len(rows) < 2:
        raise ConfigError(f"reference {source!r} needs a header row and at least one data row")
    header, body = rows[0], rows[1:]
    if any(len(r) != len(header) for r in body):
        raise ConfigError(f"reference {source!r}: rows differ in length from the header")
    table = {h: np.array([r[i] for r in body], dtype=object) for i, h in enumerate(header)}
    return _select(table, source, names, target)


def _read_parquet(
    payload: bytes, source: str, names: list[str] | None, target: str | None
) -> tuple[Columns, np.ndarray | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "Parquet references need pyarrow: pip install 'servekit[parquet]'"
        ) from None
    try:
        table = pq.read_table(io.BytesIO(payload))
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types
        raise ConfigError(f"reference {source!r} is not a Parquet file: {exc}") from None
    data = {c: np.asarray(table.column(c).to_pylist(), dtype=object) for c in table.column_names}
    return _select(data, source, names, target)


def _select(
    table: Columns, source: str, names: list[str] | None, target: str | None
) -> tuple[Columns, np.ndarray | None]:
    missing = [n for n in [*(names or []), *([target] if target else [])] if n not in table]
    if missing:
        raise ConfigError(f"reference {source!r} has no column(s) {missing}; it has {list(table)}")
    chosen = names or [c for c in table if c != target]
    targets = _numeric_or_codes(table[target])[0] if target else None
    return {n: table[n] for n in chosen}, targets


def _numeric_or_codes(column: np.ndarray) -> tuple[np.ndarray, list[str] | None]:
    """Float values, or (for strings) float codes and the sorted labels they stand for."""
    try:
        return column.astype(np.float64), None
    except (TypeError, ValueError):
        labels = sorted({str(v) for v in column})
        index = {label: code for code, label in enumerate(labels)}
        return np.array([index[str(v)] for v in column], dtype=np.float64), labels


def _assemble(
    columns: Columns,
    targets: np.ndarray | None,
    types: list[str] | dict[str, str] | None,
    source: str,
) -> Reference:
    names = list(columns)
    if not names:
        raise ConfigError(f"reference {source!r} has no feature columns")
    encoded, categories = [], {}
    for name in names:
        values, labels = _numeric_or_codes(columns[name])
        encoded.append(values)
        if labels is not None:
            categories[name] = labels
    if isinstance(types, dict):
        unknown = sorted(set(types) - set(names))
        if unknown:
            raise ConfigError(f"reference {source!r}: types name unknown features {unknown}")
        kinds = [types.get(n, "categorical" if n in categories else "numeric") for n in names]
    elif types is not None:
        if len(types) != len(names):
            raise ConfigError(f"reference {source!r}: {len(types)} types for {len(names)} columns")
        kinds = list(types)
    else:
        kinds = ["categorical" if n in categories else "numeric" for n in names]
    for name in categories:
        if kinds[names.index(name)] != "categorical":
            raise ConfigError(f"reference {source!r}: column {name!r} holds text, not numbers")
    return Reference(np.column_stack(encoded), names, kinds, targets, categories=categories)


_READERS = {".npy": _read_npy, ".csv": _read_csv, ".parquet": _read_parquet}
"""Reader by file suffix."""


__all__ = ["FEATURE_TYPES", "Reference", "load_reference"]
