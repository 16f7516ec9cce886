"""What the ``servekit`` commands share: the consoles, the default URL, calling the server."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)
DEFAULT_URL = "http://127.0.0.1:8080"


def call(method: str, target: str, **kwargs: Any) -> httpx.Response:
    """One request to a running server; print why and exit 1 when it fails."""
    try:
        response = httpx.request(method, target, **kwargs)
    except httpx.HTTPError as exc:
        err_console.print(f"[red]error:[/red] cannot reach {target}: {exc}")
        raise typer.Exit(1) from None
    if response.is_error:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        message = body.get("error", body) if isinstance(body, dict) else body
        err_console.print(f"[red]error {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response
