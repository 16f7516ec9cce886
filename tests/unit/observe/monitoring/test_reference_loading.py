"""Reference data from .npy, .csv and .parquet files, and the errors for bad ones."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servekit.errors import ConfigError
from servekit.observe.monitoring.reference import Reference, load_reference


def test_npy_with_default_names(tmp_path):
    path = tmp_path / "ref.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(4, 3))
    reference = load_reference(path)
    assert reference.names == ["x0", "x1", "x2"]
    assert reference.types == ["numeric"] * 3
    assert reference.features.dtype == np.float64
    assert reference.features[3, 2] == 11.0
    assert reference.targets is None


def test_npy_names_and_types(tmp_path):
    path = tmp_path / "ref.npy"
    np.save(path, np.array([[0.5, 1], [0.7, 2]]))
    reference = load_reference(path, names=["a", "b"], types={"b": "categorical"})
    assert reference.names == ["a", "b"]
    assert reference.types == ["numeric", "categorical"]


def test_csv_header_strings_become_categorical_codes_and_target(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("width,colour,label\n1.5,red,0\n2.5,blue,1\n3.0,red,1\n")
    reference = load_reference(f"file://{path}", target="label")
    assert reference.names == ["width", "colour"]
    assert reference.types == ["numeric", "categorical"]
    assert reference.categories == {"colour": ["blue", "red"]}
    assert reference.features[:, 1].tolist() == [1.0, 0.0, 1.0]
    assert reference.targets.tolist() == [0.0, 1.0, 1.0]


def test_csv_names_pick_columns(tmp_path):
    path = tmp_path / "ref.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n")
    reference = load_reference(path, names=["c", "a"])
    assert reference.names == ["c", "a"]
    assert reference.features.tolist() == [[3.0, 1.0], [6.0, 4.0]]


def test_parquet(tmp_path):
    path = tmp_path / "ref.parquet"
    table = pa.table({"x": [0.1, 0.2, 0.3], "kind": ["a", "b", "a"], "y": [1, 0, 1]})
    pq.write_table(table, path)
    reference = load_reference(path, target="y")
    assert reference.names == ["x", "kind"]
    assert reference.types == ["numeric", "categorical"]
    assert reference.targets.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("file_name", "content", "options", "message"),
    [
        ("missing.csv", None, {}, "not found"),
        ("ref.txt", "1,2\n", {}, "unsupported format"),
        ("ref.csv", "a,b\n1,2\n", {"target": "label"}, "no column"),
        ("ref.csv", "a\n", {}, "header row and at least one data row"),
        ("ref.csv", "a,b\n1,2\n3\n", {}, "differ in length"),
        ("ref.csv", "a,b\nx,2\n", {"types": ["numeric", "numeric"]}, "holds text"),
        ("ref.csv", "a,b\n1,2\n", {"types": ["numeric", "ordinal"]}, "numeric or categorical"),
        ("ref.csv", "a,b\n1,nan\n", {}, "NaN"),
        ("ref.parquet", "not parquet", {}, "not a Parquet file"),
    ],
)
def test_bad_references_raise_config_error(tmp_path, file_name, content, options, message):
    path = tmp_path / file_name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_reference(path, **options)


def test_npy_wrong_shape_or_names(tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.zeros((2, 2, 2)))
    with pytest.raises(ConfigError, match="2-D numeric"):
        load_reference(path)
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="2 columns but 3 names"):
        load_reference(flat, names=["a", "b", "c"])


def test_reference_checks_its_shape():
    with pytest.raises(ConfigError, match="3 names"):
        Reference(np.zeros((2, 2)), ["a", "b", "c"], ["numeric"] * 2)
