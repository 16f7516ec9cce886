"""Graph latency vs its nodes: a sequence costs the sum of its nodes, an ensemble the slowest.

    python bench/graphs.py [--requests 40] [--delays 20,40,60]

One server serves three custom models that sleep a known time (``asyncio.sleep``, so nothing is
CPU-bound) and four graphs over them: a sequence a -> b -> c, an ensemble of a, b and c (mean),
a switch and a splitter. Requests go one at a time over REST V2; the table shows the median and
p90 latency of each node called directly and of each graph, what the graph should cost from its
nodes (sum or max of the node medians) and the difference (the graph's own overhead).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from servekit.testing import ServerProcess  # noqa: E402

SLEEPER = textwrap.dedent(
    """
    import asyncio

    import servekit


    class Sleeper(servekit.Model):
        '''Answers its input after sleeping ``delay_ms`` (model.yaml parameters).'''

        async def predict(self, inputs):
            await asyncio.sleep(self.parameters["delay_ms"] / 1000)
            return {"x": inputs["x"]}
    """
)
GRAPHS = textwrap.dedent(
    """
    graphs:
      - {name: sequence, sequence: [{model: a}, {model: b}, {model: c}]}
      - {name: ensemble, ensemble: {combiner: mean, nodes: [{model: a}, {model: b}, {model: c}]}}
      - name: switch
        switch: {cases: [{when: {input: x, op: gt, value: 0}, node: {model: b}}]}
      - {name: splitter, splitter: {nodes: [{model: b}]}}
    """
)
BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


def write_repository(root: Path, delays: dict[str, float]) -> Path:
    repo = root / "models"
    for name, delay in delays.items():
        folder = repo / name
        folder.mkdir(parents=True)
        (folder / "model.py").write_text(SLEEPER)
        (folder / "model.yaml").write_text(f"parameters: {{delay_ms: {delay}}}\n")
    spec = root / "graphs.yaml"
    spec.write_text(GRAPHS)
    return spec


def latencies(client: httpx.Client, name: str, requests: int) -> list[float]:
    for _ in range(3):  # warm-up
        client.post(f"/v2/models/{name}/infer", json=BODY).raise_for_status()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        client.post(f"/v2/models/{name}/infer", json=BODY).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="per row (default 40)")
    parser.add_argument("--delays", default="20,40,60", help="sleep of a,b,c in ms")
    args = parser.parse_args(argv)
    delays = dict(zip("abc", (float(d) for d in args.delays.split(",")), strict=True))
    with tempfile.TemporaryDirectory(prefix="servekit-bench-graphs-") as tmp:
        spec = write_repository(Path(tmp), delays)
        repo = str(Path(tmp) / "models")
        with (
            ServerProcess(spec, args=["--model-repository", repo]) as server,
            httpx.Client(base_url=server.http_url, timeout=30) as client,
        ):
            rows = {n: latencies(client, n, args.requests) for n in [*delays, *_EXPECTED]}
    medians = {name: statistics.median(samples) for name, samples in rows.items()}
    print("| target | sleeps (ms) | median ms | p90 ms | expected from nodes | overhead ms |")
    print("|---|---|---|---|---|---|")
    for name, samples in rows.items():
        p90 = statistics.quantiles(samples, n=10)[-1]
        if name in delays:
            line = f"| node {name} | {delays[name]:g} | {medians[name]:.1f} | {p90:.1f} | | |"
        else:
            how, nodes = _EXPECTED[name]
            expected = how([medians[n] for n in nodes])
            label = f"{how.__name__} of {'+'.join(nodes) if how is sum else ','.join(nodes)}"
            line = (
                f"| {name} | {'/'.join(f'{delays[n]:g}' for n in nodes)} | {medians[name]:.1f} "
                f"| {p90:.1f} | {label} = {expected:.1f} | {medians[name] - expected:+.1f} |"
            )
        print(line)
    return 0


_EXPECTED = {
    "sequence": (sum, ["a", "b", "c"]),
    "ensemble": (max, ["a", "b", "c"]),
    "switch": (max, ["b"]),
    "splitter": (max, ["b"]),
}
"""Graph -> what its latency should be from its nodes' medians."""


if __name__ == "__main__":
    raise SystemExit(main())
