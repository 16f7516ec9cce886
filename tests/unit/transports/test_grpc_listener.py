"""Choosing gRPC core's listener: only before grpc loads, never over the operator's choice."""

from __future__ import annotations

import logging

import pytest

from servekit.transports.grpc_listener import EXPERIMENTS_ENV, LEGACY_LISTENER, choose_listener


def test_legacy_listener_is_requested_when_nobody_decided() -> None:
    environ: dict[str, str] = {}
    said = choose_listener(True, environ, grpc_loaded=False)
    assert environ == {EXPERIMENTS_ENV: LEGACY_LISTENER}
    assert "long-standing" in said


def test_the_operators_grpc_experiments_are_kept() -> None:
    environ = {EXPERIMENTS_ENV: "event_engine_listener"}
    said = choose_listener(True, environ, grpc_loaded=False)
    assert environ == {EXPERIMENTS_ENV: "event_engine_listener"}
    assert "as set" in said


def test_turned_off_it_leaves_grpcio_alone() -> None:
    environ: dict[str, str] = {}
    assert "default" in choose_listener(False, environ, grpc_loaded=False)
    assert environ == {}


def test_too_late_once_grpc_is_imported_and_it_says_so(caplog: pytest.LogCaptureFixture) -> None:
    environ: dict[str, str] = {}
    with caplog.at_level(logging.WARNING, logger="servekit.grpc"):
        said = choose_listener(True, environ, grpc_loaded=True)
    assert environ == {}
    assert "already loaded" in said
    assert f"{EXPERIMENTS_ENV}={LEGACY_LISTENER}" in caplog.text
