"""ATHENA_* settings: defaults visible in app.config, bad values named at init."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena import Athena
from flask_athena.config import DEFAULTS
from flask_athena.errors import ConfigurationError

from .widgets import state_of


def test_defaults_are_written_into_app_config(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    for key, default in DEFAULTS.items():
        assert app.config[f"ATHENA_{key}"] == default
    assert app.config["ATHENA_URL_PREFIX"] == "/_athena"
    assert app.config["ATHENA_PAGE_TIMEOUT"] == 60
    assert app.config["ATHENA_MAX_BODY_SIZE"] == 1024 * 1024


def test_values_set_before_init_are_kept(make_app: Callable[..., Flask]) -> None:
    app = make_app(ATHENA_OUTBOX_SIZE=7, ATHENA_URL_PREFIX="/live", ATHENA_HEARTBEAT=2)
    config = state_of(app).config
    assert (config.outbox_size, config.url_prefix, config.heartbeat) == (7, "/live", 2.0)
    assert app.config["ATHENA_OUTBOX_SIZE"] == 7


def test_url_prefix_moves_the_endpoints(make_app: Callable[..., Flask]) -> None:
    app = make_app(ATHENA_URL_PREFIX="/live")
    response = app.test_client().get("/live/nope/events")
    assert response.status_code == 200
    assert b"event: gone" in response.data


def test_allowed_origins_accepts_a_comma_or_space_separated_string(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(ATHENA_ALLOWED_ORIGINS="https://a.example, https://b.example/ http://c:8000")
    assert state_of(app).config.allowed_origins == {
        "https://a.example",
        "https://b.example",
        "http://c:8000",
    }


BAD_VALUES = [
    ("URL_PREFIX", "_athena"),
    ("URL_PREFIX", "/athena/"),
    ("URL_PREFIX", 5),
    ("URL_PREFIX", None),
    ("BROKER_URL", "http://localhost"),
    ("BROKER_URL", 6379),
    ("HEARTBEAT", "15"),
    ("HEARTBEAT", True),
    ("HEARTBEAT", 0),
    ("HEARTBEAT", -1),
    ("HEARTBEAT", None),
    ("HEARTBEAT", float("nan")),
    ("HEARTBEAT", float("inf")),
    ("PAGE_TIMEOUT", 0),
    ("PAGE_TIMEOUT", float("nan")),
    ("CALL_TIMEOUT", 0),
    ("CALL_TIMEOUT", "30"),
    ("MAX_BODY_SIZE", 100),
    ("MAX_BODY_SIZE", 1024.5),
    ("MAX_BODY_SIZE", float("inf")),
    ("OUTBOX_SIZE", 0),
    ("OUTBOX_SIZE", float("nan")),
    ("MAX_PAGES_PER_SESSION", 0),
    ("MAX_PAGES_PER_SESSION", False),
    ("MAX_STREAMS_PER_SESSION", 0),
    ("MAX_PENDING_CALLS", 0),
    ("MAX_PENDING_CALLS", [5]),
    ("ALLOWED_ORIGINS", ["example.com"]),
    ("ALLOWED_ORIGINS", [5]),
    ("ALLOWED_ORIGINS", None),
    ("ALLOWED_ORIGINS", 5),
]


@pytest.mark.parametrize(("key", "value"), BAD_VALUES, ids=[f"{k}={v!r}" for k, v in BAD_VALUES])
def test_bad_value_raises_configuration_error_naming_the_key(key: str, value: Any) -> None:
    app = Flask(__name__)
    app.config[f"ATHENA_{key}"] = value
    with pytest.raises(ConfigurationError, match=f"ATHENA_{key}"):
        Athena(app)
    assert "athena" not in app.extensions


def test_configuration_error_is_a_value_error() -> None:
    assert issubclass(ConfigurationError, ValueError)


def test_redis_broker_url_selects_the_redis_broker_without_connecting() -> None:
    # Nothing connects before first use (gunicorn forks workers after import).
    from flask_athena.broker.redis import RedisBroker

    app = Flask(__name__)
    app.config["ATHENA_BROKER_URL"] = "redis://127.0.0.1:1/0"
    Athena(app)
    assert isinstance(app.extensions["athena"].broker, RedisBroker)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=repr)
@pytest.mark.parametrize("key", ["HEARTBEAT", "OUTBOX_SIZE"])
def test_regression_nan_or_infinite_setting_was_accepted_or_crashed_unnamed(
    key: str, value: float
) -> None:
    # HEARTBEAT=nan used to be accepted; OUTBOX_SIZE=nan raised a bare
    # ValueError from int() that did not name the key.
    app = Flask(__name__)
    app.config[f"ATHENA_{key}"] = value
    with pytest.raises(ConfigurationError, match=f"ATHENA_{key} must be a finite number"):
        Athena(app)


@pytest.mark.parametrize("value", [None, 5, 1.5], ids=repr)
def test_regression_non_list_allowed_origins_raised_type_error(value: Any) -> None:
    # A non-iterable used to escape as "TypeError: 'NoneType' object is not iterable".
    app = Flask(__name__)
    app.config["ATHENA_ALLOWED_ORIGINS"] = value
    with pytest.raises(ConfigurationError, match="ATHENA_ALLOWED_ORIGINS"):
        Athena(app)


def test_config_from_env_types_values_like_their_defaults() -> None:
    from flask_athena.config import config_from_env

    environ = {
        "ATHENA_HEARTBEAT": "0.5",
        "ATHENA_OUTBOX_SIZE": "20000",
        "ATHENA_BROKER_URL": "redis://127.0.0.1:6379/0",
        "ATHENA_UNKNOWN": "ignored",
        "HOME": "/root",
    }
    assert config_from_env(environ) == {
        "ATHENA_HEARTBEAT": 0.5,
        "ATHENA_OUTBOX_SIZE": 20000,
        "ATHENA_BROKER_URL": "redis://127.0.0.1:6379/0",
    }


def test_config_from_env_names_the_key_of_a_value_that_is_not_a_number() -> None:
    from flask_athena.config import config_from_env
    from flask_athena.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="ATHENA_OUTBOX_SIZE"):
        config_from_env({"ATHENA_OUTBOX_SIZE": "lots"})
