"""Reading a model repository: layout, model.yaml, format inference, and problems kept per model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servekit.errors import ConfigError
from servekit.repository import ModelConfig, TensorConfig, scan_repository
from servekit.repository.config import read_model_config
from servekit.repository.formats import find_artifact, infer_format
from servekit.repository.local import read_model
from servekit.types.metadata import TensorSpec

XGB_JSON = json.dumps({"learner": {"attributes": {}}, "version": [2, 1, 0]})
LGB_TEXT = "tree\nversion=v4\nnum_class=1\n"


def _write(path: Path, content: str | bytes = b"dummy") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


def _by_name(models) -> dict:
    return {m.name: m for m in models}


# -- scan_repository ------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    # versioned, with a model.yaml that filters versions and declares a signature and lineage
    _write(root / "iris" / "1" / "model.joblib")
    _write(root / "iris" / "2" / "model.joblib")
    _write(root / "iris" / "3" / "model.joblib")
    _write(root / "iris" / "10" / "model.joblib")
    _write(
        root / "iris" / "model.yaml",
        """
versions: [2, "10"]
platform: sklearn_sklearn
inputs:
  - {name: x, datatype: FP64, shape: [-1, 4]}
outputs:
  - {name: label, datatype: INT64, shape: [-1]}
parameters: {threshold: 0.5}
lineage:
  dataset: iris.csv
  git_sha: abc123
""",
    )
    # unversioned: the folder itself is version 1
    _write(root / "flat" / "model.onnx")
    _write(root / "flat" / "README.md", "notes")
    # every other format, one model each
    _write(root / "booster" / "1" / "model.json", XGB_JSON)
    _write(root / "gbm" / "1" / "model.txt", LGB_TEXT)
    _write(root / "net" / "model.pt")
    _write(root / "custom" / "model.py", "class M: ...\n")
    _write(root / "pickled" / "3" / "model.pkl")
    # broken models: each keeps its error, none hides the others
    _write(root / "bad_yaml" / "model.yaml", "inputs: [unclosed\n")
    _write(root / "bad_yaml" / "model.joblib")
    _write(root / "bad_field" / "model.yaml", "name: bad_field\nbogus_field: 1\n")
    _write(root / "bad_field" / "model.joblib")
    _write(
        root / "bad_dtype" / "model.yaml",
        "inputs:\n  - {name: x, datatype: FP128, shape: [-1]}\n",
    )
    _write(root / "bad_dtype" / "model.joblib")
    _write(root / "no_artifact" / "1" / "notes.md", "no model here")
    _write(root / "plain_json" / "1" / "config.json", json.dumps({"not": "xgboost"}))
    # skipped: hidden folders, underscore folders, loose files
    _write(root / ".git" / "model.joblib")
    _write(root / "_staging" / "model.joblib")
    _write(root / "loose.joblib")
    return root


def test_scan_returns_every_model_folder_sorted(repo: Path):
    models = scan_repository(repo)
    assert [m.name for m in models] == [
        "bad_dtype",
        "bad_field",
        "bad_yaml",
        "booster",
        "custom",
        "flat",
        "gbm",
        "iris",
        "net",
        "no_artifact",
        "pickled",
        "plain_json",
    ]
    assert all(m.path == repo / m.name for m in models)


def test_scan_accepts_a_string_path(repo: Path):
    assert len(scan_repository(str(repo))) == 12


def test_versioned_model_with_config(repo: Path):
    iris = _by_name(scan_repository(repo))["iris"]
    assert iris.error is None
    assert [v.version for v in iris.versions] == ["2", "10"]  # the filter, ints made strings
    for version in iris.versions:
        assert version.format == "sklearn"
        assert version.artifact == repo / "iris" / version.version / "model.joblib"
        assert version.error is None
    config = iris.config
    assert config.versions == ["2", "10"]
    assert config.platform == "sklearn_sklearn"
    assert [t.to_spec() for t in config.inputs] == [TensorSpec("x", "FP64", (-1, 4))]
    assert [t.to_spec() for t in config.outputs] == [TensorSpec("label", "INT64", (-1,))]
    assert config.parameters == {"threshold": 0.5}
    assert config.lineage == {"dataset": "iris.csv", "git_sha": "abc123"}


def test_versions_default_to_the_newest_numbered_folder(tmp_path: Path):
    for version in ["1", "2", "10", "9"]:
        _write(tmp_path / "m" / version / "model.onnx")
    _write(tmp_path / "m" / "extra" / "model.onnx")  # not a version folder
    [model] = scan_repository(tmp_path)
    assert [v.version for v in model.versions] == ["10"]  # TF Serving's default: latest 1


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("{latest: 2}", ["9", "10"]),
        ("{all: true}", ["1", "2", "9", "10"]),
        ("{specific: [2, 9]}", ["2", "9"]),
    ],
)
def test_version_policies(tmp_path: Path, policy: str, expected: list[str]):
    for version in ["1", "2", "10", "9"]:
        _write(tmp_path / "m" / version / "model.onnx")
    (tmp_path / "m" / "model.yaml").write_text(f"version_policy: {policy}\n")
    [model] = scan_repository(tmp_path)
    assert [v.version for v in model.versions] == expected


def test_a_version_policy_names_exactly_one_rule(tmp_path: Path):
    _write(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "model.yaml").write_text("version_policy: {latest: 1, all: true}\n")
    [model] = scan_repository(tmp_path)
    assert "exactly one of latest, all, specific" in model.error


def test_every_numbered_folder_with_policy_all(tmp_path: Path):
    for version in ["1", "2", "10", "9"]:
        _write(tmp_path / "m" / version / "model.onnx")
    (tmp_path / "m" / "model.yaml").write_text("version_policy: {all: true}\n")
    [model] = scan_repository(tmp_path)
    assert {v.version for v in model.versions} == {"1", "2", "9", "10"}
    assert len(model.versions) == 4
    assert all(v.artifact == tmp_path / "m" / v.version / "model.onnx" for v in model.versions)
    assert all(v.format == "onnx" and v.error is None for v in model.versions)


def test_unversioned_model_is_version_1(repo: Path):
    flat = _by_name(scan_repository(repo))["flat"]
    assert flat.error is None
    [version] = flat.versions
    assert (version.version, version.format, version.error) == ("1", "onnx", None)
    assert version.artifact == repo / "flat" / "model.onnx"
    assert flat.config == ModelConfig()


@pytest.mark.parametrize(
    ("name", "version", "fmt", "artifact"),
    [
        ("booster", "1", "xgboost", "1/model.json"),
        ("gbm", "1", "lightgbm", "1/model.txt"),
        ("net", "1", "torch", "model.pt"),
        ("custom", "1", "custom", "model.py"),
        ("pickled", "3", "sklearn", "3/model.pkl"),
    ],
)
def test_formats_inferred_per_model(repo: Path, name, version, fmt, artifact):
    model = _by_name(scan_repository(repo))[name]
    assert model.error is None
    [source] = model.versions
    assert (source.version, source.format, source.error) == (version, fmt, None)
    assert source.artifact == repo / name / artifact


def test_invalid_yaml_names_the_file(repo: Path):
    model = _by_name(scan_repository(repo))["bad_yaml"]
    assert model.versions == []
    assert str(repo / "bad_yaml" / "model.yaml") in model.error
    assert "not valid YAML" in model.error


def test_unknown_field_names_the_file_and_the_field(repo: Path):
    model = _by_name(scan_repository(repo))["bad_field"]
    assert str(repo / "bad_field" / "model.yaml") in model.error
    assert "bogus_field" in model.error
    assert "Extra inputs are not permitted" in model.error
    assert model.versions == []


def test_bad_datatype_names_the_file_and_the_field(repo: Path):
    model = _by_name(scan_repository(repo))["bad_dtype"]
    assert str(repo / "bad_dtype" / "model.yaml") in model.error
    assert "inputs.0.datatype" in model.error
    assert "FP128" in model.error


def test_model_without_artifact_keeps_a_version_error(repo: Path):
    model = _by_name(scan_repository(repo))["no_artifact"]
    assert model.error is None
    [version] = model.versions
    assert version.format is None and version.artifact is None
    assert "no model artifact found" in version.error
    assert str(repo / "no_artifact" / "1") in version.error


def test_json_without_learner_is_not_an_artifact(repo: Path):
    [version] = _by_name(scan_repository(repo))["plain_json"].versions
    assert "no model artifact found" in version.error


def test_broken_models_do_not_hide_good_ones(repo: Path):
    models = _by_name(scan_repository(repo))
    healthy = {
        n for n, m in models.items() if m.error is None and all(not v.error for v in m.versions)
    }
    assert healthy == {"booster", "custom", "flat", "gbm", "iris", "net", "pickled"}


def test_filtered_version_that_does_not_exist(tmp_path: Path):
    _write(tmp_path / "m" / "1" / "model.onnx")
    _write(tmp_path / "m" / "model.yaml", "versions: [1, 7]\n")
    [model] = scan_repository(tmp_path)
    one, seven = model.versions
    assert one.error is None and one.format == "onnx"
    assert seven.version == "7" and seven.artifact is None
    assert seven.error == f"{tmp_path / 'm'}/7: not found"


def test_duplicate_names_mark_every_folder(tmp_path: Path):
    _write(tmp_path / "a" / "model.onnx")
    _write(tmp_path / "a" / "model.yaml", "name: shared\n")
    _write(tmp_path / "b" / "model.onnx")
    _write(tmp_path / "b" / "model.yaml", "name: shared\n")
    _write(tmp_path / "c" / "model.onnx")
    models = scan_repository(tmp_path)
    assert [m.name for m in models] == ["shared", "shared", "c"]
    for model in models[:2]:
        assert model.error == "model name 'shared' is used by more than one folder"
    assert models[2].error is None
    assert {m.path.name for m in models[:2]} == {"a", "b"}


def test_folder_name_clashing_with_a_configured_name(tmp_path: Path):
    _write(tmp_path / "iris" / "model.onnx")
    _write(tmp_path / "other" / "model.onnx")
    _write(tmp_path / "other" / "model.yaml", "name: iris\n")
    models = scan_repository(tmp_path)
    assert all("used by more than one folder" in m.error for m in models)


def test_declared_format_picks_its_artifact(tmp_path: Path):
    _write(tmp_path / "m" / "1" / "model.onnx")
    _write(tmp_path / "m" / "1" / "model.joblib")
    _write(tmp_path / "m" / "model.yaml", "format: onnx\n")
    [model] = scan_repository(tmp_path)
    [version] = model.versions
    assert (version.format, version.artifact, version.error) == (
        "onnx",
        tmp_path / "m" / "1" / "model.onnx",
        None,
    )


def test_two_formats_without_declared_format_is_an_error(tmp_path: Path):
    _write(tmp_path / "m" / "model.onnx")
    _write(tmp_path / "m" / "model.joblib")
    [model] = scan_repository(tmp_path)
    [version] = model.versions
    assert "several artifacts" in version.error
    assert "model.joblib" in version.error and "model.onnx" in version.error
    assert "set 'format' in model.yaml" in version.error


def test_repository_that_is_not_a_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match="is not a folder"):
        scan_repository(tmp_path / "missing")
    _write(tmp_path / "file")
    with pytest.raises(ConfigError, match="is not a folder"):
        scan_repository(tmp_path / "file")


def test_empty_repository(tmp_path: Path):
    assert scan_repository(tmp_path) == []


def test_read_model_directly(tmp_path: Path):
    _write(tmp_path / "m" / "2" / "model.pt")
    model = read_model(tmp_path / "m")
    assert model.name == "m"
    assert [(v.version, v.format) for v in model.versions] == [("2", "torch")]


# -- model.yaml -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("inputs: [unclosed\n", ["not valid YAML"]),
        ("- just\n- a list\n", ["expected a mapping at the top level"]),
        ("'a string'\n", ["expected a mapping at the top level"]),
        ("unknown: 1\n", ["unknown", "Extra inputs are not permitted"]),
        ("inputs:\n  - {name: x, datatype: FP128, shape: [1]}\n", ["inputs.0.datatype", "FP128"]),
        ("outputs:\n  - {name: y, datatype: fp32, shape: [1]}\n", ["outputs.0.datatype", "fp32"]),
        ("inputs:\n  - {name: x, datatype: FP32, shape: [-2]}\n", ["inputs.0.shape", "-1"]),
        ("inputs:\n  - {name: x, datatype: FP32, shape: [a]}\n", ["inputs.0.shape.0"]),
        ("inputs:\n  - {name: x, datatype: FP32}\n", ["inputs.0.shape", "Field required"]),
        ("inputs:\n  - {name: x, datatype: FP32, shape: [1], extra: 1}\n", ["inputs.0.extra"]),
        ("versions: 3\n", ["versions"]),
        ("lineage: [1, 2]\n", ["lineage"]),
    ],
)
def test_invalid_model_yaml(tmp_path: Path, text, fragments):
    _write(tmp_path / "model.yaml", text)
    with pytest.raises(ConfigError) as info:
        read_model_config(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'model.yaml'}: ")
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_model_yaml_is_all_defaults(tmp_path: Path, text):
    _write(tmp_path / "model.yaml", text)
    assert read_model_config(tmp_path) == ModelConfig()


def test_missing_model_yaml_is_all_defaults(tmp_path: Path):
    config = read_model_config(tmp_path)
    assert config == ModelConfig()
    assert config.versions is None and config.inputs is None and config.format is None
    assert config.parameters == {} and config.lineage == {}


def test_tensor_config_to_spec():
    spec = TensorConfig(name="x", datatype="BYTES", shape=[-1, 2]).to_spec()
    assert spec == TensorSpec("x", "BYTES", (-1, 2))


# -- format inference -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "content", "fmt"),
    [
        ("model.joblib", b"x", "sklearn"),
        ("model.pkl", b"x", "sklearn"),
        ("model.pickle", b"x", "sklearn"),
        ("model.json", XGB_JSON, "xgboost"),
        ("booster.json", json.dumps({"learner": 1}), "xgboost"),
        ("model.ubj", b"x", "xgboost"),
        ("model.bst", b"x", "xgboost"),
        ("model.txt", LGB_TEXT, "lightgbm"),
        ("model.model", "tree\n", "lightgbm"),
        ("model.txt", "  tree  \nmore", "lightgbm"),
        ("model.lgb", b"x", "lightgbm"),
        ("model.onnx", b"x", "onnx"),
        ("model.pt", b"x", "torch"),
        ("model.pth", b"x", "torch"),
        ("model.py", "x = 1\n", "custom"),
    ],
)
def test_infer_format(tmp_path: Path, filename, content, fmt):
    artifact = _write(tmp_path / filename, content)
    _write(tmp_path / "model.yaml", "{}\n")  # ignored
    _write(tmp_path / "README.md", "# ignored")
    _write(tmp_path / ".hidden.onnx")  # ignored
    assert infer_format(tmp_path) == (fmt, artifact)


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("model.json", json.dumps({"not": "xgboost"})),
        ("model.json", json.dumps(["learner"])),
        ("model.json", "{not json"),
        ("model.txt", "hello\ntree\n"),
        ("model.txt", ""),
        ("model.h5", b"x"),
        ("model.yaml", "{}"),
        ("notes.md", "x"),
        ("model.sha256", "x"),
    ],
)
def test_no_artifact(tmp_path: Path, filename, content):
    _write(tmp_path / filename, content)
    with pytest.raises(ConfigError) as info:
        infer_format(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "no model artifact found" in str(info.value)


def test_model_py_wins_over_other_artifacts(tmp_path: Path):
    _write(tmp_path / "model.joblib")
    _write(tmp_path / "weights.onnx")
    _write(tmp_path / "model.py", "x = 1\n")
    assert infer_format(tmp_path) == ("custom", tmp_path / "model.py")


def test_several_files_of_one_format_pick_the_first(tmp_path: Path):
    _write(tmp_path / "b.joblib")
    _write(tmp_path / "a.pkl")
    assert infer_format(tmp_path) == ("sklearn", tmp_path / "a.pkl")


def test_subfolders_are_not_artifacts(tmp_path: Path):
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(ConfigError, match="no model artifact found"):
        infer_format(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("xgboost", "model.json"),
        ("lightgbm", "model.txt"),
        ("sklearn", "model.joblib"),
        ("onnx", "model.onnx"),
        ("custom", "model.py"),
    ],
)
def test_find_artifact_for_a_declared_format(tmp_path: Path, fmt, expected):
    _write(tmp_path / "model.json", XGB_JSON)
    _write(tmp_path / "model.txt", LGB_TEXT)
    _write(tmp_path / "model.joblib")
    _write(tmp_path / "model.onnx")
    assert find_artifact(tmp_path, fmt) == tmp_path / expected


def test_find_artifact_for_an_import_string_is_the_folder(tmp_path: Path):
    _write(tmp_path / "weights.bin")
    assert find_artifact(tmp_path, "my_pkg.models:Runtime") == tmp_path
