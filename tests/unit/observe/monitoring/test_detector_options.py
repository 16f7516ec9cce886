"""Bad detector types and options are ConfigErrors; user classes load by import string."""

from __future__ import annotations

import numpy as np
import pytest

from servekit.errors import ConfigError
from servekit.observe.monitoring.detectors import DETECTORS, build_detector
from servekit.observe.monitoring.reference import Reference


@pytest.mark.parametrize(
    ("type_name", "options", "message"),
    [
        ("kolmogorov", {}, "unknown detector type"),
        ("tabular", {"p_val": 1.5}, "p_val"),
        ("tabular", {"p_val": "often"}, "p_val"),
        ("tabular", {"correction": "holm"}, "correction"),
        ("tabular", {"windw": 10}, "bad options"),
        ("mmd", {"n_permutations": 5}, "n_permutations"),
        ("mmd", {"n_permutations": 2.5}, "whole number"),
        ("classifier", {"model": "svm"}, "model"),
        ("classifier", {"n_folds": 1}, "n_folds"),
        ("adwin", {"ert": 1}, "ert"),
        ("page_hinkley", {"kind": "weather"}, "kind"),
        ("isolation_forest", {"percentile": 100}, "percentile"),
        ("mahalanobis", {"held_out": 0.99}, "held_out"),
        ("squeezing", {"bits": 0}, "bits"),
        ("cbpe", {"n_bootstrap": 10}, "n_bootstrap"),
        ("no_such_module_here:Detector", {}, "cannot import"),
        ("servekit.errors:NoSuchDetector", {}, "has no"),
        ("servekit.errors:ConfigError", {}, "none of"),
    ],
)
def test_bad_options(type_name, options, message):
    with pytest.raises(ConfigError, match=message):
        build_detector(type_name, "d", **options)


def test_every_registered_type_builds_with_defaults():
    for type_name in DETECTORS:
        detector = build_detector(type_name, f"my-{type_name}")
        assert detector.name == f"my-{type_name}"
        assert detector.kind


def test_detectors_needing_model_outputs_say_so():
    reference = Reference(np.zeros((50, 2)), ["a", "b"], ["numeric", "numeric"])
    for type_name in ("output", "cbpe"):
        with pytest.raises(ConfigError, match="reference"):
            build_detector(type_name, type_name).fit(reference)
    with pytest.raises(ConfigError, match="needs the model"):
        build_detector("squeezing", "adv").fit(reference, None)


def test_window_of_the_wrong_width_is_a_clear_error():
    detector = build_detector("tabular", "t")
    detector.fit(
        Reference(np.random.default_rng(0).normal(size=(50, 2)), ["a", "b"], ["numeric"] * 2)
    )
    with pytest.raises(ValueError, match="3 columns, the reference 2"):
        detector.test(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="NaN"):
        detector.test(np.full((10, 2), np.nan))


def test_user_detector_class_by_import_string(tmp_path, monkeypatch):
    (tmp_path / "my_detectors.py").write_text(
        "import numpy as np\n"
        "class Threshold:\n"
        "    kind = 'outlier'\n"
        "    def __init__(self, name, limit=1.0):\n"
        "        self.name, self.limit = name, limit\n"
        "    def fit(self, reference, predict=None):\n"
        "        pass\n"
        "    def score(self, rows):\n"
        "        scores = np.abs(rows).max(axis=1)\n"
        "        return scores, scores > self.limit\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    detector = build_detector("my_detectors:Threshold", "mine", limit=2.0)
    _, flags = detector.score(np.array([[0.5, 1.0], [3.0, 0.0]]))
    assert flags.tolist() == [False, True]
    with pytest.raises(ConfigError, match="bad options"):
        build_detector("my_detectors:Threshold", "mine", threshold=2.0)
