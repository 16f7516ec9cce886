"""Multi-armed bandits learn from feedback rewards and remember it across a restart.

Two variants with known reward rates (the test draws each reward from a seeded RNG by which
model version answered, and posts it to the feedback endpoint); both strategies must send most
traffic to the better one, and keep doing so after the server restarts.
"""

from __future__ import annotations

import random
import textwrap
from collections import Counter
from pathlib import Path

import httpx
import pytest

from servekit.testing import ServerProcess

BODY = {
    "inputs": [
        {"name": "input-0", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}
    ]
}
REWARD_RATE = {"1": 0.2, "2": 0.8}  # iris version 2 is the better arm
SPEC = textwrap.dedent(
    """
    services:
      - name: bandit-epsilon-greedy
        experiment:
          strategy: epsilon-greedy
          epsilon: 0.1
          variants:
            - {name: a, model: iris, version: "1"}
            - {name: b, model: iris, version: "2"}
      - name: bandit-thompson
        experiment:
          strategy: thompson
          variants:
            - {name: a, model: iris, version: "1"}
            - {name: b, model: iris, version: "2"}
    """
)
SERVICES = ("bandit-epsilon-greedy", "bandit-thompson")


def play(http: httpx.Client, service: str, rounds: int, rng: random.Random) -> list[str]:
    """Request, then reward what answered; returns the versions that served, in order."""
    served = []
    for _ in range(rounds):
        response = http.post(f"/v2/models/{service}/infer", json=BODY)
        assert response.status_code == 200, response.text
        body = response.json()
        version = body["model_version"]
        reward = 1.0 if rng.random() < REWARD_RATE[version] else 0.0
        # Feedback may name the service that was called or the model that answered.
        target = service if len(served) % 2 else body["model_name"]
        feedback = http.post(
            f"/v2/models/{target}/feedback", json={"id": body["id"], "reward": reward}
        )
        assert feedback.status_code == 200, feedback.text
        assert feedback.json()["model_version"] == version
        served.append(version)
    return served


@pytest.mark.parametrize("service", SERVICES)
def test_bandit_converges_and_resumes_after_restart(
    tmp_path: Path, service: str, example_repo: tuple[Path, dict]
) -> None:
    spec = tmp_path / "deployments.yaml"
    spec.write_text(SPEC)
    args = ["--model-repository", str(example_repo[0])]
    rng = random.Random(6)
    with (
        ServerProcess(spec, args=args, data_dir=tmp_path / "data") as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
    ):
        served = play(http, service, 300, rng)
        learnt = http.get(f"/v2/deployments/{service}").json()["router_state"]
    late = Counter(served[-100:])
    assert late["2"] / 100 > 0.8, late
    assert sum(arm["rewards"] for arm in learnt.values()) == 300

    with (
        ServerProcess(spec, args=args, data_dir=tmp_path / "data") as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
    ):
        resumed = http.get(f"/v2/deployments/{service}").json()["router_state"]
        assert resumed == learnt  # nothing forgotten
        served = play(http, service, 50, rng)  # no exploration phase from scratch
    assert Counter(served)["2"] / 50 > 0.8, Counter(served)
