"""DeploymentManager and Service without a server: live rollouts, rejected edits, rewards by
request id, persisted bandit state, transformer hooks and shadow copies."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from servekit import InferenceRequest, InferenceResponse, Tensor, Transformer
from servekit.deploy.manager import DeploymentManager
from servekit.deploy.shadow import ShadowMetrics, ShadowMirror
from servekit.errors import InferenceError, InvalidInput
from servekit.types import RequestContext

SPEC = textwrap.dedent(
    """
    services:
      - name: svc
        predictor: {model: iris, version: "1"}
        canary: {model: iris, version: "2", traffic_percent: 0}
        shadow: {model: iris, version: "3"}
      - name: bandit
        experiment:
          strategy: epsilon-greedy
          epsilon: 0
          variants: [{name: a, model: iris, version: "1"}, {name: b, model: iris, version: "2"}]
    """
)
REQUEST = InferenceRequest(inputs=[Tensor.from_array("x", np.zeros((1, 4)))])


class FakeModels:
    """Stands in for the DataPlane's invoke: answers with the model/version it was asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None, str | None]] = []

    async def __call__(self, name, version, request, context) -> InferenceResponse:
        self.calls.append((name, version, context.variant))
        if version == "3":
            raise InferenceError("shadow candidate failed")
        return InferenceResponse(model_name=name, model_version=version, outputs=[])


def manager(tmp_path: Path, text: str = SPEC) -> DeploymentManager:
    spec = tmp_path / "deployments.yaml"
    spec.write_text(text)
    built = DeploymentManager(spec, CollectorRegistry(), tmp_path / "state" / "routers.json")
    built.load({"iris"})
    return built


def infer(deployments: DeploymentManager, name: str, models: FakeModels, **headers: str):
    context = RequestContext("test", request_id=f"id-{len(models.calls)}", headers=headers)
    service = deployments.get(name)
    assert service is not None
    return asyncio.run(service.infer(None, REQUEST, context, models)), context


def test_rollout_set_promote_rollback(tmp_path: Path) -> None:
    deployments, models = manager(tmp_path), FakeModels()
    assert infer(deployments, "svc", models)[0].model_version == "1"
    assert ("iris", "1", "predictor") in models.calls
    deployments.rollout("svc", "set", 100)
    assert infer(deployments, "svc", models)[0].model_version == "2"
    deployments.rollout("svc", "promote")
    assert deployments.describe_one("svc")["variants"] == [
        {"name": "predictor", "model": "iris", "version": "2", "traffic_percent": 100.0}
    ]
    with pytest.raises(InvalidInput, match="no canary"):
        deployments.rollout("svc", "rollback")


def test_invalid_edit_is_rejected_and_a_valid_one_applies(tmp_path: Path) -> None:
    deployments = manager(tmp_path)
    spec = tmp_path / "deployments.yaml"
    spec.write_text(SPEC.replace('version: "1"', "version: [1]", 1))
    assert deployments.reload_if_changed() is False
    assert "services[0] (svc).predictor.version" in (deployments.last_error or "")
    assert deployments.get("svc") is not None
    spec.write_text("services: [{name: other, predictor: {model: iris}}]\n# edited\n")
    assert deployments.reload_if_changed() is True
    assert deployments.names() == ["other"] and deployments.last_error is None


def test_rewards_go_to_the_arm_that_served_the_request_and_persist(tmp_path: Path) -> None:
    deployments, models = manager(tmp_path), FakeModels()
    served = {}
    for _ in range(4):
        response, context = infer(deployments, "bandit", models)
        served[context.request_id] = response.model_version
    for request_id, version in served.items():
        deployments.reward("iris", version, 1.0 if version == "2" else 0.0, request_id)
    deployments.reward("iris", "1", 1.0, "unknown-id")  # nobody served it: ignored
    state = deployments.describe_one("bandit")["router_state"]
    assert sum(arm["rewards"] for arm in state.values()) == 4
    deployments.save_state()
    again = DeploymentManager(
        tmp_path / "deployments.yaml", CollectorRegistry(), tmp_path / "state" / "routers.json"
    )
    again.load({"iris"})
    assert again.describe_one("bandit")["router_state"] == state


class Shout(Transformer):
    async def preprocess(self, request, context):
        if not request.inputs:
            raise InvalidInput("no inputs")
        return request

    def postprocess(self, response, request, context):
        response.model_name = "changed"  # the served-by facts are restored after the hook
        response.parameters["shouted"] = True
        return response


class Crash(Transformer):
    def preprocess(self, request, context):
        raise KeyError("oops")


def test_transformer_hooks_plain_or_async_and_their_errors(tmp_path: Path) -> None:
    text = "services: [{name: s, predictor: {model: iris, version: '1'}}]"
    deployments, models = manager(tmp_path, text), FakeModels()
    service = deployments.get("s")
    service.transformer = Shout()
    response, _ = infer(deployments, "s", models)
    assert (response.model_name, response.model_version) == ("iris", "1")
    assert response.parameters == {"shouted": True}
    service.transformer = Crash()
    with pytest.raises(
        InferenceError, match="service 's': transformer preprocess failed: KeyError"
    ):
        infer(deployments, "s", models)


def test_shadow_copies_never_change_the_answer(tmp_path: Path) -> None:
    deployments, models = manager(tmp_path), FakeModels()

    async def run() -> InferenceResponse:
        context = RequestContext("test", request_id="r1")
        response = await deployments.get("svc").infer(None, REQUEST, context, models)
        await asyncio.sleep(0.01)  # let the copy run
        return response

    response = asyncio.run(run())
    assert response.model_version == "1"
    assert ("iris", "3", "shadow") in models.calls


def test_variant_header_and_unknown_variant(tmp_path: Path) -> None:
    deployments, models = manager(tmp_path), FakeModels()
    canary = infer(deployments, "svc", models, **{"x-servekit-variant": "canary"})[0]
    assert canary.model_version == "2"
    with pytest.raises(InvalidInput, match="no variant 'blue'"):
        infer(deployments, "svc", models, **{"x-servekit-variant": "blue"})


def test_shadow_copies_over_the_bound_are_dropped_and_counted() -> None:
    registry = CollectorRegistry()
    mirror = ShadowMirror("svc", "iris", "3", 100, ShadowMetrics(registry), max_in_flight=1)
    models = FakeModels()

    async def run() -> None:
        context = RequestContext("test", request_id="r")
        mirror.maybe_mirror(REQUEST, context, models)
        mirror.maybe_mirror(REQUEST, context, models)  # one already in flight: dropped
        await asyncio.sleep(0.01)

    asyncio.run(run())
    value = registry.get_sample_value
    assert value("servekit_shadow_requests_total", {"service": "svc", "outcome": "dropped"}) == 1
    assert value("servekit_shadow_requests_total", {"service": "svc", "outcome": "error"}) == 1
    assert models.calls == [("iris", "3", "shadow")]
