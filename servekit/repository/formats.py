"""Infer a model's format from the artifact in its version folder."""

from __future__ import annotations

from pathlib import Path

from servekit.errors import ConfigError

_BY_SUFFIX = {
    ".joblib": "sklearn",
    ".pkl": "sklearn",
    ".pickle": "sklearn",
    ".onnx": "onnx",
    ".pt": "torch",
    ".pth": "torch",
    ".ubj": "xgboost",
    ".bst": "xgboost",
    ".lgb": "lightgbm",
}
_SNIFF_BYTES = 4096
_IGNORED = {".md", ".yaml", ".yml", ".sha256", ".lock"}


def _sniff(path: Path) -> str | None:
    """Formats that share a generic suffix (.json, .txt) are told apart by their content."""
    if path.suffix == ".json":
        # XGBoost's JSON models open with {"learner": ...}; the head is enough to tell.
        try:
            with path.open("rb") as fh:
                head = fh.read(_SNIFF_BYTES)
        except OSError:
            return None
        return "xgboost" if head.lstrip().startswith(b"{") and b'"learner"' in head else None
    if path.suffix in {".txt", ".model"}:
        try:
            with path.open("r", errors="replace") as fh:
                first = fh.readline().strip()
        except OSError:
            return None
        return "lightgbm" if first == "tree" else None
    return _BY_SUFFIX.get(path.suffix)


def infer_format(version_dir: Path) -> tuple[str, Path]:
    """Return (format, artifact path) for a version folder, or raise a ConfigError saying why."""
    if (version_dir / "model.py").exists():
        return "custom", version_dir / "model.py"
    found: list[tuple[str, Path]] = []
    for path in sorted(version_dir.iterdir()):
        if not path.is_file() or path.suffix in _IGNORED or path.name.startswith("."):
            continue
        fmt = _sniff(path)
        if fmt:
            found.append((fmt, path))
    if not found:
        raise ConfigError(
            f"{version_dir}: no model artifact found (expected .joblib/.pkl, .json/.ubj XGBoost, "
            "LightGBM .txt, .onnx, .pt or model.py)"
        )
    if len({fmt for fmt, _ in found}) > 1:
        names = ", ".join(p.name for _, p in found)
        raise ConfigError(f"{version_dir}: several artifacts ({names}); set 'format' in model.yaml")
    return found[0]


def find_artifact(version_dir: Path, fmt: str) -> Path:
    """The artifact for an explicitly declared format (first file whose content matches)."""
    if fmt == "custom":
        return version_dir / "model.py"
    for path in sorted(version_dir.iterdir()):
        if path.is_file() and _sniff(path) == fmt:
            return path
    return version_dir
