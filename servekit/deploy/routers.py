"""Routers choose a variant per request: fixed weights (A/B, canary) or multi-armed bandits.

Registered by strategy name in ``ROUTERS``; a bandit learns from rewards (feedback) and its state
is a plain dict so it can be persisted and restored.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Protocol

from servekit.deploy.sticky import rendezvous


class Router(Protocol):
    def choose(self, sticky_key: str | None) -> str: ...

    def reward(self, variant: str, value: float) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


class FixedSplit:
    """Weighted split; with a sticky key, consistent hashing keeps each key on one variant."""

    learns = False

    def __init__(self, weights: Mapping[str, float], rng: random.Random | None = None, **_: Any):
        self.weights = {name: float(w) for name, w in weights.items()}
        self._names = [n for n, w in self.weights.items() if w > 0]
        self._cumulative = _cumulative([self.weights[n] for n in self._names])
        self._rng = rng or random.Random()

    def choose(self, sticky_key: str | None) -> str:
        if sticky_key is not None:
            return rendezvous(sticky_key, self.weights)
        point = self._rng.random() * self._cumulative[-1]
        for name, bound in zip(self._names, self._cumulative, strict=True):
            if point < bound:
                return name
        return self._names[-1]

    def reward(self, variant: str, value: float) -> None:
        """Fixed weights do not learn."""

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""


class _Bandit:
    """Per-arm reward counts: ``pulls`` rewarded requests and the ``total`` of their rewards."""

    learns = True

    def __init__(self, weights: Mapping[str, float], rng: random.Random | None = None, **_: Any):
        self.arms: dict[str, list[float]] = {name: [0.0, 0.0] for name in weights}
        self._rng = rng or random.Random()

    def reward(self, variant: str, value: float) -> None:
        arm = self.arms.get(variant)
        if arm is not None:
            arm[0] += 1
            arm[1] += value

    def state(self) -> dict[str, Any]:
        return {name: {"rewards": n, "total": t} for name, (n, t) in self.arms.items()}

    def restore(self, state: Mapping[str, Any]) -> None:
        for name, saved in state.items():
            if name in self.arms and isinstance(saved, Mapping):
                self.arms[name] = [float(saved.get("rewards", 0)), float(saved.get("total", 0))]


class EpsilonGreedy(_Bandit):
    """Explore a random arm with probability epsilon, else exploit the best mean reward
    (arms without a reward yet count as best, so each is tried)."""

    def __init__(self, weights: Mapping[str, float], epsilon: float = 0.1, **kwargs: Any):
        super().__init__(weights, **kwargs)
        self.epsilon = epsilon

    def choose(self, sticky_key: str | None) -> str:
        names = list(self.arms)
        if self._rng.random() < self.epsilon:
            return self._rng.choice(names)
        means = {n: (t / c if c else float("inf")) for n, (c, t) in self.arms.items()}
        best = max(means.values())
        return self._rng.choice([n for n in names if means[n] == best])


class ThompsonSampling(_Bandit):
    """Beta-Bernoulli Thompson sampling; rewards are in [0, 1] (fractions count partially)."""

    def choose(self, sticky_key: str | None) -> str:
        draws = {}
        for name, (count, total) in self.arms.items():
            success = min(max(total, 0.0), count)
            draws[name] = self._rng.betavariate(1.0 + success, 1.0 + count - success)
        return max(draws, key=draws.__getitem__)


def _cumulative(weights: list[float]) -> list[float]:
    total, out = 0.0, []
    for weight in weights:
        total += weight
        out.append(total)
    return out


ROUTERS: dict[str, type] = {
    "fixed": FixedSplit,
    "epsilon-greedy": EpsilonGreedy,
    "thompson": ThompsonSampling,
}
"""Strategy name -> router class; each takes (weights, epsilon=..., rng=...)."""


def build_router(strategy: str, weights: Mapping[str, float], epsilon: float) -> Router:
    return ROUTERS[strategy](weights, epsilon=epsilon)
