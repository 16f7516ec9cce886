"""``servekit monitor`` and ``servekit reference snapshot``: model monitoring from the shell."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from servekit.cli_support import DEFAULT_URL, call, console, err_console

Url = Annotated[str, typer.Option(help="Server URL.")]
Token = Annotated[str | None, typer.Option(help="Admin token, if the server has one.")]

reference_app = typer.Typer(help="Reference data for drift and outlier detectors.")


def monitor(
    model: Annotated[str, typer.Argument(help="Model name.")],
    url: Url = DEFAULT_URL,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The monitors of a model: each detector's last result and which features drifted."""
    state = call("GET", f"{url.rstrip('/')}/v2/models/{model}/monitoring", timeout=60).json()
    if as_json:
        console.print_json(json.dumps(state))
        return
    console.print(_headline(state))
    if state.get("error"):
        console.print(f"[red]{state['error']}[/red]")
    table = Table("detector", "kind", "results", "alarm", "statistic", "p-value", "window",
                  "drifted features / figures", "time (UTC)")  # fmt: skip
    for detector in state.get("detectors", []):
        last = detector.get("last_result") or {}
        alarm = "[red]ALARM[/red]" if detector["alarm"] else ("ok" if last else "-")
        table.add_row(
            detector["name"], detector["kind"], str(detector["results"]), alarm,
            _number(last.get("statistic")), _number(last.get("p_value")),
            str(last.get("window_size", "")), _details(last), _when(last.get("time")),
        )  # fmt: skip
    console.print(table)
    outliers = state.get("outliers") or []
    if outliers:
        recent = Table("flagged by", "request id", "score", "time (UTC)", title="recent outliers")
        for row in outliers[:10]:
            recent.add_row(row["detector"], row["id"], _number(row["score"]), _when(row["time"]))
        console.print(recent)


def _headline(state: dict[str, Any]) -> str:
    text = f"[bold]{state['model_name']}[/bold] monitoring: {state['status']}"
    if state.get("model_version"):
        text += f" (version {state['model_version']})"
    drifted = state.get("drifted_features") or []
    if drifted:
        text += f" - [red]drifted features: {', '.join(drifted)}[/red]"
    elif state.get("alarm"):
        text += " - [red]alarm[/red]"
    elif state.get("status") == "ready":
        text += " - no alarm"
    return text


def _details(result: dict[str, Any]) -> str:
    drifted = [f["name"] for f in result.get("features") or () if f.get("drifted")]
    if drifted:
        return ", ".join(drifted)
    values = result.get("values") or {}
    return ", ".join(f"{k}={v:.4g}" for k, v in values.items())


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _when(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


@reference_app.command()
def snapshot(
    model: Annotated[str, typer.Argument(help="Model name.")],
    out: Annotated[Path, typer.Option(help="Parquet (.parquet), CSV (.csv) or .npy file.")],
    since: Annotated[str, typer.Option(help="From: unix time, ISO 8601, or 15m/2h/7d.")] = "1h",
    until: Annotated[str | None, typer.Option(help="Until (same forms).")] = None,
    input_name: Annotated[
        str | None, typer.Option("--input", help="Input tensor (default: the first).")
    ] = None,
    features: Annotated[
        str | None, typer.Option(help="Comma-separated column names (default x0, x1...).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Most requests read.")] = 10_000,
    url: Url = DEFAULT_URL,
    token: Token = None,
) -> None:
    """Write a reference file from logged traffic (the server's payload store)."""
    params = {"model": model, "since": since, "limit": str(limit)}
    if until is not None:
        params["until"] = until
    headers = {"authorization": f"Bearer {token}"} if token else {}
    events = call(
        "GET", f"{url.rstrip('/')}/v2/logs", params=params, headers=headers, timeout=120
    ).json()["events"]
    rows = reference_rows(events, input_name)
    if rows is None:
        err_console.print(f"[red]error:[/red] no logged inputs of model {model!r} in that period")
        raise typer.Exit(1)
    names = features.split(",") if features else [f"x{i}" for i in range(rows.shape[1])]
    if len(names) != rows.shape[1]:
        err_console.print(f"[red]error:[/red] {len(names)} names for {rows.shape[1]} features")
        raise typer.Exit(1)
    write_reference(rows, names, out)
    err_console.print(f"wrote {out}: {rows.shape[0]} rows of {rows.shape[1]} features")


def reference_rows(events: list[dict[str, Any]], input_name: str | None) -> np.ndarray | None:
    """The rows of one input across logged requests, oldest first (errors left out)."""
    blocks = []
    for event in reversed(events):
        if event.get("status", "ok") != "ok":
            continue
        inputs = (event.get("request") or {}).get("inputs") or []
        tensor = next((t for t in inputs if input_name in (None, t["name"])), None)
        if tensor is None or tensor.get("data") is None:
            continue
        data = np.asarray(tensor["data"], dtype=np.float64)
        shape = tensor["shape"]
        blocks.append(data.reshape(shape[0], -1) if len(shape) > 1 else data.reshape(1, -1))
    widths = {b.shape[1] for b in blocks}
    if not blocks or len(widths) != 1:
        return None
    return np.concatenate(blocks)


def write_reference(rows: np.ndarray, names: list[str], out: Path) -> None:
    if out.suffix == ".npy":
        np.save(out, rows)
    elif out.suffix == ".csv":
        header = ",".join(names)
        np.savetxt(out, rows, delimiter=",", header=header, comments="", fmt="%.17g")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: rows[:, i] for i, name in enumerate(names)})
        pq.write_table(table, out)


__all__ = ["monitor", "reference_app", "reference_rows", "snapshot", "write_reference"]
