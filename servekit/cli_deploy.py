"""``servekit rollout`` and ``servekit export``, and how ``servekit serve`` reads its argument
(a model repository, a deployments YAML, or a KServe InferenceService YAML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from servekit.cli_support import DEFAULT_URL, call, console, err_console
from servekit.errors import ServekitError

rollout_app = typer.Typer(help="Change a service's canary live: set, promote, rollback.")
export_app = typer.Typer(help="Write a service in another system's format.")


# -- serve ------------------------------------------------------------------------------------


def resolve_serve_target(
    target: str | None, model_repository: str | None
) -> tuple[str | None, str | None, Path | None]:
    """(model repository, deployments file, InferenceService file) for ``servekit serve``."""
    path = Path(target) if target else None
    if path is None or path.suffix not in (".yaml", ".yml") or not path.is_file():
        return target or model_repository, None, None
    from servekit.deploy.kserve import is_inference_service

    if is_inference_service(path):
        return model_repository, None, path
    return model_repository, str(path), None


def apply_kserve(settings: Any, isvc: Path) -> Any:
    """Settings that serve the InferenceService ``isvc`` (repository and deployments generated
    under the storage cache); its warnings are printed, never silent."""
    from pydantic import ValidationError

    from servekit.deploy.kserve import import_inference_service
    from servekit.errors import ConfigError
    from servekit.observe.payloads.config import HTTPSinkConfig
    from servekit.storage import materialize

    options = settings.storage_options()
    workdir = settings.storage_cache_dir / "kserve" / isvc.resolve().stem
    imported = import_inference_service(
        isvc, workdir, lambda uri: materialize(uri, settings.storage_cache_dir, options)
    )
    for warning in imported.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    payload_log = settings.payload_log
    if imported.logger_url:
        document = {"type": "http", "name": "kserve-logger", "url": imported.logger_url}
        try:
            sink = HTTPSinkConfig.model_validate({**document, "mode": imported.logger_mode})
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{isvc}: spec.predictor.logger: {problems}") from None
        payload_log = payload_log.model_copy(
            update={"enabled": True, "sinks": [*payload_log.sinks, sink]}
        )
    return settings.model_copy(
        update={
            "model_repository": str(imported.repository),
            "deployments": str(imported.deployments),
            "payload_log": payload_log,
        }
    )


# -- rollout ----------------------------------------------------------------------------------


def _manage(url: str, service: str, action: str, token: str | None, body: Any = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = f"{url.rstrip('/')}/v2/deployments/{service}/{action}"
    answer = call("POST", target, json=body, headers=headers, timeout=30).json()
    table_rows = [
        f"{v['name']}: {v['model']}/{v.get('version') or 'default'} {v['traffic_percent']:g} %"
        for v in answer.get("variants", [])
    ]
    console.print(f"{service}: " + "; ".join(table_rows))


Url = Annotated[str, typer.Option(help="Server URL.")]
Token = Annotated[str | None, typer.Option(help="Admin token, if the server has one.")]
Service = Annotated[str, typer.Argument(help="Service name.")]


@rollout_app.command("set")
def rollout_set(
    service: Service,
    traffic_percent: Annotated[float, typer.Option("--percent", help="Canary traffic, 0-100.")],
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Send PERCENT of the service's traffic to its canary."""
    _manage(url, service, "rollout", token, {"traffic_percent": traffic_percent})


@rollout_app.command()
def promote(service: Service, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Make the canary the predictor (all traffic)."""
    _manage(url, service, "promote", token)


@rollout_app.command()
def rollback(service: Service, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Drop the canary (all traffic to the predictor)."""
    _manage(url, service, "rollback", token)


# -- export -----------------------------------------------------------------------------------


@export_app.command()
def kserve(
    service: Service,
    spec: Annotated[Path, typer.Option(help="Deployments YAML file or folder.")],
    model_repository: Annotated[Path, typer.Option(help="Local model repository.")],
) -> None:
    """Print a KServe InferenceService YAML for SERVICE of a deployments file."""
    from servekit.deploy.kserve import export_inference_service, export_warnings
    from servekit.deploy.spec import load_file
    from servekit.repository.local import read_model

    def storage(model: str, version: str | None) -> tuple[str, str]:
        source = read_model(model_repository / model)
        versions = {v.version: v for v in source.versions}
        chosen = versions.get(version) if version else max(versions.values(), key=_version_key)
        if chosen is None or chosen.format is None or chosen.directory is None:
            raise ServekitError(f"model {model!r} version {version!r} not found in the repository")
        return chosen.format, chosen.directory.resolve().as_uri()

    try:
        document = load_file(spec).document
        found = next((s for s in document.services if s.name == service), None)
        if found is None:
            raise ServekitError(f"{spec}: no service named {service!r}")
        described = found.model_dump(by_alias=True, exclude_none=True)
        isvc = export_inference_service(described, storage)
    except ServekitError as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    for warning in export_warnings(described):
        err_console.print(f"[yellow]warning:[/yellow] {warning}")
    typer.echo(yaml.safe_dump(isvc, sort_keys=False), nl=False)


def _version_key(source: Any) -> tuple[int, int | str]:
    from servekit.core.registry import version_key

    return version_key(source.version)


__all__ = ["apply_kserve", "export_app", "resolve_serve_target", "rollout_app"]
