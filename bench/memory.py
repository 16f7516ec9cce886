"""Memory with many models: 20 small scikit-learn models served with 1 and then 2 worker
instances each; prints the server's total proportional memory (PSS, over its process tree).

    python bench/memory.py [--models 20]

PSS divides shared pages among the processes that share them, so a model loaded once in a
zygote and shared by its forked workers counts once — what the machine really spends.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from servekit.testing import ServerProcess


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_mb(root: int) -> float:
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def build(repo: Path, models: int, instances: int) -> None:
    X, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
    for i in range(models):
        folder = repo / f"m{i:02d}" / "1"
        folder.mkdir(parents=True)
        joblib.dump(model, folder / "model.joblib")
        (repo / f"m{i:02d}" / "model.yaml").write_text(f"instances: {instances}\n")


def measure(models: int, instances: int) -> float:
    repo = Path(tempfile.mkdtemp(prefix="servekit-mem-"))
    try:
        build(repo, models, instances)
        with ServerProcess(repo, env={"OMP_NUM_THREADS": "1"}, startup_timeout=600) as server:
            time.sleep(2)
            assert server.process is not None
            return pss_mb(server.process.pid)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=20)
    args = parser.parse_args()
    rows = [(n, measure(args.models, n)) for n in (1, 2)]
    print(f"| {args.models} models × instances | server PSS (MB) | vs 1 instance |")
    print("|---|---|---|")
    for instances, mb in rows:
        print(f"| {instances} | {mb:,.0f} | {mb / rows[0][1]:.2f}× |")
    np.testing.assert_array_less(0, [mb for _, mb in rows])


if __name__ == "__main__":
    main()
