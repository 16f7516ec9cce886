"""``servekit logs`` and ``servekit performance``: read the payload log and live performance."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from servekit.cli_support import DEFAULT_URL, call, console, err_console

Url = Annotated[str, typer.Option(help="Server URL.")]
Token = Annotated[str | None, typer.Option(help="Admin token, if the server has one.")]


def logs(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    id: Annotated[str | None, typer.Option("--id", help="Only this request id.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From: unix time, ISO 8601, or 15m/2h/7d.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Until (same forms).")] = None,
    prediction: Annotated[str | None, typer.Option(help="Predictions holding this value.")] = None,
    status: Annotated[str | None, typer.Option(help="ok, invalid_argument, internal...")] = None,
    limit: Annotated[int, typer.Option(help="Most events (newest first).")] = 20,
    parquet: Annotated[
        Path | None, typer.Option(help="Write the events to this Parquet file.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Search logged inferences (request, response, feedback) of a running server."""
    params = {
        k: v
        for k, v in {
            "model": model, "version": version, "id": id, "since": since, "until": until,
            "prediction": prediction, "status": status, "limit": str(limit),
        }.items()
        if v is not None
    }  # fmt: skip
    if parquet is not None:
        params["format"] = "parquet"
    response = _get(f"{url.rstrip('/')}/v2/logs", params, token)
    if parquet is not None:
        parquet.write_bytes(response.content)
        err_console.print(f"wrote {parquet} ({len(response.content)} bytes)")
        return
    events = response.json()["events"]
    if as_json:
        for event in events:
            console.print_json(json.dumps(event))
        return
    table = Table("time (UTC)", "id", "model", "version", "status", "ms", "prediction", "truth")
    for e in events:
        when = datetime.fromtimestamp(e["time"], UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        table.add_row(
            when, e["id"], e["model"], e["version"], e["status"], f"{e['latency_ms']:.2f}",
            _short(e.get("prediction")), _short(e.get("truth")),
        )  # fmt: skip
    console.print(table)


def performance(
    model: Annotated[str, typer.Argument(help="Model name.")],
    baseline: Annotated[str | None, typer.Option(help="Version to compare against.")] = None,
    candidate: Annotated[str | None, typer.Option(help="Version compared.")] = None,
    url: Url = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Live accuracy / RMSE per version from feedback, and whether the candidate is better."""
    params = {k: v for k, v in {"baseline": baseline, "candidate": candidate}.items() if v}
    report = _get(f"{url.rstrip('/')}/v2/models/{model}/performance", params, None).json()
    if as_json:
        console.print_json(json.dumps(report))
        return
    table = Table("window", "version", "labelled", "metric", "value")
    for window, versions in report["windows"].items():
        for version, figures in versions.items():
            for name, value in (figures.get("metrics") or {}).items():
                if isinstance(value, int | float) and name != "count":
                    table.add_row(window, version, str(figures["feedback"]), name, f"{value:.4f}")
            if figures.get("reward"):
                mean = figures["reward"]["mean"]
                table.add_row(window, version, str(figures["feedback"]), "reward", f"{mean:.4f}")
    console.print(table)
    comparison = report.get("comparison")
    if comparison and comparison.get("difference") is not None:
        low, high = comparison["ci_low"], comparison["ci_high"]
        interval = f"[{low:+.4f}, {high:+.4f}]" if low is not None else "(too few samples)"
        verdict = comparison["better"] or "no significant difference"
        console.print(
            f"{comparison['metric']}: v{comparison['candidate_version']} - "
            f"v{comparison['baseline_version']} = {comparison['difference']:+.4f}, "
            f"{comparison['confidence']:.0%} CI {interval}: {verdict}"
        )


def _short(value: Any, width: int = 40) -> str:
    text = "" if value is None else json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _get(target: str, params: dict[str, str], token: str | None) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return call("GET", target, params=params, headers=headers, timeout=60)
