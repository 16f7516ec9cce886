"""Routers: fixed splits, sticky hashing and bandits (seeded, so exact and repeatable)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from servekit.deploy.routers import ROUTERS, EpsilonGreedy, FixedSplit, ThompsonSampling
from servekit.deploy.sticky import rendezvous, unit_hash


def test_registry_is_keyed_by_strategy_name() -> None:
    assert {
        "fixed": FixedSplit,
        "epsilon-greedy": EpsilonGreedy,
        "thompson": ThompsonSampling,
    } == ROUTERS


def test_fixed_split_follows_weights() -> None:
    router = FixedSplit({"a": 90, "b": 10, "off": 0}, rng=random.Random(1))
    counts = Counter(router.choose(None) for _ in range(20_000))
    assert set(counts) == {"a", "b"}
    assert 0.09 < counts["b"] / 20_000 < 0.11


def test_sticky_keys_are_stable_and_split_by_weight() -> None:
    weights = {"predictor": 80.0, "canary": 20.0}
    picks = {f"user-{i}": rendezvous(f"user-{i}", weights) for i in range(5000)}
    assert all(rendezvous(k, weights) == v for k, v in picks.items())
    share = Counter(picks.values())["canary"] / 5000
    assert 0.17 < share < 0.23
    # Raising the canary to 30 % only moves users onto the canary, never off it.
    moved = {k: rendezvous(k, {"predictor": 70.0, "canary": 30.0}) for k in picks}
    assert all(moved[k] == "canary" for k, v in picks.items() if v == "canary")
    assert unit_hash("x") == unit_hash("x") and 0 < unit_hash("y") < 1


@pytest.mark.parametrize("cls", [EpsilonGreedy, ThompsonSampling])
def test_bandits_converge_to_the_better_arm(cls: type) -> None:
    rng = random.Random(3)
    router = cls({"bad": 1, "good": 1}, epsilon=0.1, rng=random.Random(4))
    rate = {"bad": 0.3, "good": 0.7}
    chosen = []
    for _ in range(2000):
        arm = router.choose(None)
        router.reward(arm, 1.0 if rng.random() < rate[arm] else 0.0)
        chosen.append(arm)
    assert Counter(chosen[-500:])["good"] / 500 > 0.8


def test_bandit_state_round_trips() -> None:
    router = EpsilonGreedy({"a": 1, "b": 1}, epsilon=0.0)
    router.reward("a", 1.0)
    router.reward("b", 0.0)
    router.reward("ghost", 1.0)  # an arm that is gone is ignored
    fresh = EpsilonGreedy({"a": 1, "b": 1}, epsilon=0.0)
    fresh.restore(router.state())
    assert fresh.state() == {
        "a": {"rewards": 1.0, "total": 1.0},
        "b": {"rewards": 1.0, "total": 0.0},
    }
    assert {fresh.choose(None) for _ in range(20)} == {"a"}
