"""Settings precedence: CLI overrides > SERVEKIT_* env > YAML config file > defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servekit.errors import ConfigError
from servekit.settings import CONFIG_FILE_ENV, Settings, load_settings

DEFAULTS = {
    "model_repository": None,
    "host": "127.0.0.1",
    "http_port": 8080,
    "grpc_port": 8081,
    "grpc_enabled": True,
    "grpc_legacy_listener": True,
    "grpc_poller_nice": 0,
    "log_level": "info",
    "log_format": "text",
    "max_request_bytes": 64 * 1024 * 1024,
    "freeze_heap": True,
    "inference_threads": 4,
    "strict_readiness": True,
    "model_control": "auto",
    "repository_poll_seconds": 0.0,
    "reload_policy": "availability",
    "drain_seconds": 30.0,
    "cold_start_timeout_seconds": 60.0,
    "management_api": True,
    "admin_token": None,
    "storage_cache_dir": Path.home() / ".cache" / "servekit",
    "storage_endpoint_url": None,
    "storage_key": None,
    "storage_secret": None,
    "storage_anon": False,
    "storage_max_archive_bytes": 8 * 1024**3,
    "graceful_shutdown_seconds": 10.0,
    "deployments": None,
    "deployments_poll_seconds": 1.0,
    "deployment_state_dir": None,
    "payload_log": {
        "enabled": True,
        "directory": Path.home() / ".local" / "share" / "servekit" / "payloads",
        "store": {
            "enabled": True,
            "path": None,
            "retention_seconds": 7 * 86400.0,
            "retention_bytes": 1024**3,
            "sample_rate": 1.0,
            "mode": "all",
            "batch_size": 4096,
            "linger_seconds": 0.5,
        },
        "sinks": [],
        "spool_max_bytes": 2 * 1024**3,
        "on_spool_full": "block",
        "fsync": False,
        "sample_rate": 1.0,
        "redact": [],
        "max_payload_bytes": 256 * 1024,
        "shutdown_flush_seconds": 5.0,
        "delivery": "process",
        "sink_nice": 10,
        "performance_windows_seconds": [300.0, 3600.0, 86400.0],
    },
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SERVEKIT_* variable from the outer environment leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("SERVEKIT_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "servekit.yaml"
    path.write_text(
        "http_port: 9000\n"
        "grpc_port: 9001\n"
        "host: 0.0.0.0\n"
        "model_repository: /srv/models\n"
        "log_level: debug\n"
    )
    return path


def test_defaults():
    settings = load_settings()
    assert isinstance(settings, Settings)
    assert settings.model_dump() == DEFAULTS


def test_every_field_has_a_documented_default():
    assert set(Settings.model_fields) == set(DEFAULTS)


def test_yaml_file_overrides_defaults(config_file: Path):
    settings = load_settings(config_file)
    assert settings.http_port == 9000
    assert settings.grpc_port == 9001
    assert settings.host == "0.0.0.0"
    assert settings.model_repository == "/srv/models"
    assert settings.log_level == "debug"
    assert settings.inference_threads == DEFAULTS["inference_threads"]


def test_yaml_file_as_string_path(config_file: Path):
    assert load_settings(str(config_file)).http_port == 9000


def test_config_file_from_env(config_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(CONFIG_FILE_ENV, str(config_file))
    assert CONFIG_FILE_ENV == "SERVEKIT_CONFIG"
    assert load_settings().http_port == 9000


def test_explicit_config_file_beats_the_env_one(config_file: Path, tmp_path: Path, monkeypatch):
    other = tmp_path / "other.yaml"
    other.write_text("http_port: 7000\n")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(other))
    assert load_settings(config_file).http_port == 9000


def test_env_overrides_yaml(config_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SERVEKIT_HTTP_PORT", "9100")
    settings = load_settings(config_file)
    assert settings.http_port == 9100
    assert settings.grpc_port == 9001  # still from the file
    assert settings.host == "0.0.0.0"


def test_cli_override_beats_env_and_yaml(config_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SERVEKIT_HTTP_PORT", "9100")
    monkeypatch.setenv("SERVEKIT_HOST", "10.0.0.1")
    settings = load_settings(config_file, http_port=9200, grpc_port=None)
    assert settings.http_port == 9200  # CLI
    assert settings.host == "10.0.0.1"  # env
    assert settings.grpc_port == 9001  # None means "option not given": the file still counts
    assert settings.log_level == "debug"  # file


def test_cli_override_without_file_or_env():
    settings = load_settings(http_port=0, grpc_enabled=False, model_repository="/m")
    assert (settings.http_port, settings.grpc_enabled, settings.model_repository) == (
        0,
        False,
        "/m",
    )


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("SERVEKIT_HTTP_PORT", "1234", "http_port", 1234),
        ("SERVEKIT_GRPC_PORT", "0", "grpc_port", 0),
        ("SERVEKIT_GRPC_ENABLED", "false", "grpc_enabled", False),
        ("SERVEKIT_STRICT_READINESS", "0", "strict_readiness", False),
        ("SERVEKIT_LOG_LEVEL", "warning", "log_level", "warning"),
        ("SERVEKIT_LOG_FORMAT", "json", "log_format", "json"),
        ("SERVEKIT_MAX_REQUEST_BYTES", "1000", "max_request_bytes", 1000),
        ("SERVEKIT_INFERENCE_THREADS", "16", "inference_threads", 16),
        ("SERVEKIT_GRACEFUL_SHUTDOWN_SECONDS", "2.5", "graceful_shutdown_seconds", 2.5),
        ("SERVEKIT_MODEL_REPOSITORY", "/models", "model_repository", "/models"),
        ("servekit_http_port", "4321", "http_port", 4321),  # case-insensitive, like the OS
    ],
)
def test_env_variables(monkeypatch: pytest.MonkeyPatch, variable, value, field, expected):
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == expected


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"http_port": 70000}, "http_port"),
        ({"http_port": -1}, "http_port"),
        ({"grpc_port": "abc"}, "grpc_port"),
        ({"log_level": "verbose"}, "log_level"),
        ({"log_format": "xml"}, "log_format"),
        ({"max_request_bytes": 0}, "max_request_bytes"),
        ({"inference_threads": 0}, "inference_threads"),
        ({"graceful_shutdown_seconds": -1}, "graceful_shutdown_seconds"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_invalid_override_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        load_settings(**overrides)
    assert str(info.value).startswith("invalid settings: ")
    assert f"{field}: " in str(info.value)
    assert info.value.code.http_status == 400


@pytest.mark.parametrize(
    ("variable", "value", "field"),
    [
        ("SERVEKIT_HTTP_PORT", "not-a-port", "http_port"),
        ("SERVEKIT_GRPC_ENABLED", "maybe", "grpc_enabled"),
        ("SERVEKIT_LOG_LEVEL", "loud", "log_level"),
    ],
)
def test_invalid_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch, variable, value, field):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=f"invalid settings: {field}: "):
        load_settings()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("http_port: seventy\n", "http_port"),
        ("inference_threads: -3\n", "inference_threads"),
        ("bogus_option: 1\n", "bogus_option"),
    ],
)
def test_invalid_yaml_value_names_the_field(tmp_path: Path, text, field):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"invalid settings: {field}: "):
        load_settings(path)


def test_cli_override_rescues_an_invalid_env_value(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SERVEKIT_HTTP_PORT", "not-a-port")
    assert load_settings(http_port=1).http_port == 1


@pytest.mark.parametrize("via_env", [False, True])
def test_missing_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via_env):
    missing = tmp_path / "nope.yaml"
    if via_env:
        monkeypatch.setenv(CONFIG_FILE_ENV, str(missing))
        call = load_settings
    else:

        def call():
            return load_settings(missing)

    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value) == f"config file {str(missing)!r} not found"


def test_config_file_that_is_a_folder(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http_port: [\n", "not valid YAML"),
        ("key: 'unterminated\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping at the top level"),
        ("just a string\n", "expected a mapping at the top level"),
    ],
)
def test_unusable_config_file_is_a_config_error(tmp_path: Path, text, fragment):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["", "# nothing set\n"])
def test_empty_config_file_means_defaults(tmp_path: Path, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    assert load_settings(path).model_dump() == DEFAULTS


def test_loading_twice_does_not_leak_between_calls(config_file: Path):
    assert load_settings(config_file).http_port == 9000
    assert load_settings().http_port == 8080
    assert Settings().http_port == 8080


def test_nested_payload_log_settings_from_env_and_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "servekit.yaml"
    path.write_text(
        "payload_log:\n"
        "  sample_rate: 0.5\n"
        "  sinks:\n"
        "    - {type: http, url: 'http://127.0.0.1:9/events', content_mode: batch}\n"
    )
    monkeypatch.setenv("SERVEKIT_PAYLOAD_LOG__ON_SPOOL_FULL", "drop")
    settings = load_settings(path)
    assert settings.payload_log.sample_rate == 0.5
    assert settings.payload_log.on_spool_full == "drop"
    assert settings.payload_log.sinks[0].content_mode == "batch"


def test_a_bad_sink_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "servekit.yaml"
    path.write_text("payload_log:\n  sinks:\n    - {type: kafka}\n")
    with pytest.raises(ConfigError, match="payload_log.sinks"):
        load_settings(path)
