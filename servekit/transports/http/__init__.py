"""REST transport: V2 (with the binary extension), V1, metrics, OpenAPI and docs."""

from servekit.transports.http.app import create_app

__all__ = ["create_app"]
