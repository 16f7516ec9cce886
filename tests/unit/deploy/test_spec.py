"""Deployment spec errors name the file, the field and the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from servekit.deploy.build import build_all
from servekit.deploy.shadow import ShadowMetrics
from servekit.deploy.spec import load_file
from servekit.errors import ConfigError

MODELS = {"iris", "wine"}


def build(tmp_path: Path, text: str) -> dict:
    spec = tmp_path / "deployments.yaml"
    spec.write_text(textwrap.dedent(text))
    return build_all(load_file(spec), MODELS, ShadowMetrics(CollectorRegistry()), {})


def error_of(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        build(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "deployments.yaml")), message
    return message


def test_a_valid_spec_builds_every_service(tmp_path: Path) -> None:
    built = build(
        tmp_path,
        """
        services:
          - name: svc
            predictor: {model: iris, version: 2}
            canary: {model: iris, version: 1, traffic_percent: 10}
            shadow: {model: wine}
            sticky: {header: X-User-Id}
          - name: ab
            experiment:
              strategy: thompson
              variants: [{name: a, model: iris}, {name: b, model: svc}]
        """,
    )
    assert sorted(built) == ["ab", "svc"]
    assert built["svc"].targets() == {"iris", "wine"}
    assert built["svc"].routing_headers() == {"x-user-id"}
    assert built["svc"].spec.predictor.version == "2"  # numbers read as version strings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "services: [{name: s, predictor: {model: iris},"
            " canary: {model: iris, traffic_percent: 150}}]",
            "services[0] (s).canary.traffic_percent: Input should be less than or equal to 100",
        ),
        (
            "services: [{name: s, predictor: {model: nope}}]",
            "services[0] (s).predictor.model: no model, service or graph named 'nope'",
        ),
        (
            "services: [{name: s, predictor: {model: iris}, colour: red}]",
            "services[0] (s).colour: Extra inputs are not permitted",
        ),
        ("services: [{name: s}]", "services[0] (s): a service needs a 'predictor'"),
        (
            "services: [{name: s, experiment: {strategy: ucb,"
            " variants: [{name: a, model: iris}, {name: b, model: iris}]}}]",
            "services[0] (s).experiment.strategy: unknown strategy 'ucb'",
        ),
        (
            "services: [{name: iris, predictor: {model: wine}}]",
            "services[0] (iris).name: a model of the repository is already called 'iris'",
        ),
        (
            "services: [{name: s, predictor: {model: iris},"
            " transformer: {class: 'nowhere:Thing'}}]",
            "services[0] (s).transformer.class: cannot import 'nowhere'",
        ),
        (
            "services: [{name: a, predictor: {model: b}}, {name: b, predictor: {model: a}}]",
            "deployments call each other in a cycle: a -> b -> a",
        ),
        (
            "services: [{name: a, predictor: {model: iris}}, {name: a, predictor: {model: iris}}]",
            "names must be unique",
        ),
        ("services: {name: a}", "services: Input should be a valid list"),
        ("[1, 2]", "expected a mapping"),
    ],
)
def test_errors_name_file_field_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_transformer_from_a_file_next_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from servekit import Transformer\n\nclass Upper(Transformer):\n    pass\n\n"
        "class NotOne:\n    pass\n"
    )
    spec = (
        "services: [{name: s, predictor: {model: iris},"
        " transformer: {class: 'mine.py:%s', options: {k: 1}}}]"
    )
    built = build(tmp_path, spec % "Upper")
    assert built["s"].transformer.options == {"k": 1}
    assert "is not a servekit.Transformer" in error_of(tmp_path, spec % "NotOne")
    assert "has no class 'Missing'" in error_of(tmp_path, spec % "Missing")


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    assert "not valid YAML" in error_of(tmp_path, "services: [")
    with pytest.raises(ConfigError, match="deployments file not found"):
        load_file(tmp_path / "absent.yaml")


def test_a_folder_of_files_is_merged(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("services: [{name: a, predictor: {model: iris}}]")
    (tmp_path / "b.yml").write_text("services: [{name: b, predictor: {model: wine}}]")
    loaded = load_file(tmp_path)
    assert [s.name for s in loaded.document.services] == ["a", "b"]
    (tmp_path / "c.yaml").write_text("services: [{name: a, predictor: {model: wine}}]")
    with pytest.raises(
        ConfigError, match=r"c.yaml: names already defined in another file: \['a'\]"
    ):
        load_file(tmp_path)
