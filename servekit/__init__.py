"""servekit: serve trained models over the Open Inference Protocol (REST and gRPC) and V1."""

__version__ = "0.1.0"

from servekit.deploy.transformer import Transformer  # noqa: E402
from servekit.errors import ServekitError  # noqa: E402
from servekit.model import Model  # noqa: E402
from servekit.runtimes.base import ModelSpec, Runtime, Signature  # noqa: E402
from servekit.settings import Settings  # noqa: E402
from servekit.types import (  # noqa: E402
    InferenceRequest,
    InferenceResponse,
    RequestedOutput,
    Tensor,
    TensorSpec,
)

__all__ = [
    "InferenceRequest",
    "InferenceResponse",
    "Model",
    "ModelSpec",
    "RequestedOutput",
    "Runtime",
    "ServekitError",
    "Settings",
    "Signature",
    "Tensor",
    "TensorSpec",
    "Transformer",
    "__version__",
]
