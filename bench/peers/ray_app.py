"""Ray Serve peer: one deployment per scikit-learn pickle answering V2 REST JSON.

    python bench/peers/ray_app.py MODEL_DIR PORT

Starts a local Ray instance (one CPU, no dashboard, node address 127.0.0.1) with every process
under this one (so pinning this process pins all of Ray), then blocks.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import ray
from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0})
class SKLearnDeployment:
    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.model = joblib.load(path)

    async def __call__(self, request: Request) -> dict[str, Any]:
        document = await request.json()
        tensor = document["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        labels = self.model.predict(x)
        return {
            "model_name": self.name,
            "id": document.get("id", ""),
            "outputs": [
                {
                    "name": "predict",
                    "datatype": "INT64",
                    "shape": [len(labels)],
                    "data": labels.tolist(),
                }
            ],
        }


def main(model_dir: Path, port: int) -> None:
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        object_store_memory=128 * 1024 * 1024,
        log_to_driver=False,
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for path in sorted(model_dir.glob("*.joblib")):
        app = SKLearnDeployment.options(name=path.stem).bind(path.stem, str(path))
        serve.run(app, name=path.stem, route_prefix=f"/v2/models/{path.stem}")
    print("ray serve ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit runs Ray's own shutdown
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
