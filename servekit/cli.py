"""The ``servekit`` command. Thin: parses options, calls into the package."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from servekit import __version__, cli_deploy, cli_monitor, cli_observe
from servekit.cli_support import DEFAULT_URL, call, console, err_console
from servekit.errors import ServekitError

app = typer.Typer(
    help="Serve trained models over the Open Inference Protocol and V1.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"servekit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """servekit: one server for REST V2, gRPC V2 and V1."""


@app.command()
def serve(
    repository: Annotated[
        str | None,
        typer.Argument(
            help="Model repository (a folder or a URI: s3://, https://…), a deployments YAML, "
            "or a KServe InferenceService YAML."
        ),
    ] = None,
    model_repository: Annotated[
        str | None,
        typer.Option(help="Model repository, when the argument is a deployments YAML."),
    ] = None,
    http_port: Annotated[int | None, typer.Option(help="REST port [default: 8080].")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port [default: 8081].")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [default: 127.0.0.1].")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML settings file.")] = None,
) -> None:
    """Serve every model in REPOSITORY (and the services of a deployments YAML)."""
    from servekit.observe.logs import configure_logging
    from servekit.server import run
    from servekit.settings import load_settings

    try:
        repository, deployments, isvc = cli_deploy.resolve_serve_target(
            repository, model_repository
        )
        settings = load_settings(
            config,
            model_repository=repository,
            deployments=deployments,
            http_port=http_port,
            grpc_port=grpc_port,
            host=host,
            log_level=log_level,
            log_format=log_format,
        )
        if isvc is not None:
            settings = cli_deploy.apply_kserve(settings, isvc)
        configure_logging(settings.log_level, settings.log_format)
        run(settings)
    except ServekitError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _describe(specs: list) -> str:
    return ", ".join(f"{s.name} {s.datatype}{list(s.shape)}" for s in specs) or "-"


@app.command()
def models(
    target: Annotated[
        str,
        typer.Argument(
            help="A repository folder to inspect offline, or list | load | unload to manage a "
            "running server."
        ),
    ],
    name: Annotated[str | None, typer.Argument(help="Model name (load, unload).")] = None,
    url: Annotated[str, typer.Option(help="Server URL (list, load, unload).")] = DEFAULT_URL,
    token: Annotated[str | None, typer.Option(help="Admin token, if the server has one.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Inspect a repository (format, versions, signature, problems) or manage a live server:
    `servekit models list|load NAME|unload NAME --url URL`."""
    if target in CONTROL_ACTIONS:
        _control(target, name, url, token, as_json)
        return
    _inspect(Path(target), as_json)


CONTROL_ACTIONS = ("list", "load", "unload")


def _control(action: str, name: str | None, url: str, token: str | None, as_json: bool) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if action == "list":
        target = f"{url.rstrip('/')}/v2/repository/index"
    elif name:
        target = f"{url.rstrip('/')}/v2/repository/models/{name}/{action}"
    else:
        raise typer.BadParameter(f"'{action}' needs a model name")
    body = _post(target, None, headers, timeout=300)
    if action != "list":
        console.print(f"{action}ed {name}")
    elif as_json:
        console.print_json(json.dumps(body))
    else:
        table = Table("model", "version", "state", "reason")
        for row in body:
            table.add_row(row["name"], row["version"], row["state"], row["reason"])
        console.print(table)


def _post(target: str, payload: Any, headers: dict[str, str], timeout: float) -> Any:
    """POST and return the JSON answer; print the server's error and exit 1 on failure."""
    response = call("POST", target, json=payload, headers=headers, timeout=timeout)
    try:
        return response.json()
    except ValueError:
        return {"error": response.text}


def _inspect(repository: Path, as_json: bool) -> None:
    from servekit.core.executor import Executor
    from servekit.core.loader import ModelLoader
    from servekit.core.registry import ModelRegistry
    from servekit.observe.metrics import Metrics
    from servekit.repository.local import scan_repository

    try:
        sources = scan_repository(repository)
    except ServekitError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    registry, executor = ModelRegistry(), Executor(2)
    loader = ModelLoader(registry, executor, Metrics())
    asyncio.run(loader.load_all(sources))
    executor.shutdown()
    if as_json:
        rows = [
            {
                "name": h.name,
                "version": h.version,
                "platform": h.platform,
                "state": h.state.value,
                "error": h.error,
                "inputs": [s.to_dict() for s in h.inputs],
                "outputs": [s.to_dict() for s in h.outputs],
            }
            for h in registry
        ]
        console.print_json(json.dumps(rows))
        return
    table = Table("model", "version", "format", "state", "inputs", "outputs")
    for h in registry:
        state = h.state.value if not h.error else f"{h.state.value}: {h.error}"
        table.add_row(
            h.name, h.version, h.platform, state, _describe(h.inputs), _describe(h.outputs)
        )
    console.print(table)


def _load_payload(data: str) -> Any:
    path = Path(data)
    text = path.read_text() if len(data) < 4096 and path.is_file() else data
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--data is neither a file nor valid JSON: {exc}") from None


def _is_v1(payload: Any) -> bool:
    """V2 requests have ``inputs`` as a list of tensor objects; anything else is V1."""
    if not isinstance(payload, dict):
        return False
    if "instances" in payload:
        return True
    inputs = payload.get("inputs")
    return not (
        isinstance(inputs, list)
        and inputs
        and isinstance(inputs[0], dict)
        and "datatype" in inputs[0]
    )


@app.command()
def predict(
    model: Annotated[str, typer.Argument(help="Model name.")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help='A JSON file or a JSON string: a V2 request, or V1 {"instances": ...}.',
        ),
    ],
    url: Annotated[str, typer.Option(help="Server URL.")] = DEFAULT_URL,
    version: Annotated[str | None, typer.Option(help="Model version.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 30.0,
) -> None:
    """Send one inference request to a running server and print the answer."""
    payload = _load_payload(data)
    v1 = _is_v1(payload)
    base = f"{url.rstrip('/')}/{'v1' if v1 else 'v2'}/models/{model}"
    if version:
        base += f"/versions/{version}"
    target = f"{base}:predict" if v1 else f"{base}/infer"
    console.print_json(json.dumps(_post(target, payload, {}, timeout)))


app.add_typer(cli_deploy.rollout_app, name="rollout")
app.add_typer(cli_deploy.export_app, name="export")
app.command()(cli_observe.logs)
app.command()(cli_observe.performance)
app.command()(cli_monitor.monitor)
app.add_typer(cli_monitor.reference_app, name="reference")
