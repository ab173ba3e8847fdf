"""``ATHENA_*`` configuration: defaults, validation, one frozen snapshot.

``init_app`` reads every key once through ``app.config.setdefault`` (so
``app.config`` shows the effective values) and validates it here; a bad value
raises :class:`~flask_athena.errors.ConfigurationError` naming the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError

#: key (without the ``ATHENA_`` prefix) -> default. README.rst documents each.
DEFAULTS: dict[str, Any] = {
    "URL_PREFIX": "/_athena",
    "BROKER_URL": None,
    "HEARTBEAT": 15.0,
    "PAGE_TIMEOUT": 60.0,
    "CALL_TIMEOUT": 30.0,
    "MAX_BODY_SIZE": 1024 * 1024,
    "OUTBOX_SIZE": 1000,
    "MAX_PAGES_PER_SESSION": 32,
    "MAX_STREAMS_PER_SESSION": 32,
    "MAX_PENDING_CALLS": 1000,
    "ALLOWED_ORIGINS": (),
    "FAST_CALLS": True,
    "PRESENCE_MAX_MEMBERS": 10_000,
    "PRESENCE_MAX_META": 1024,
    "PROXY_HOPS": 0,
    "MAX_PAGES": 20_000,
    "MAX_STREAMS": 20_000,
    "MAX_PAGES_PER_CLIENT": 256,
    "MAX_STREAMS_PER_CLIENT": 128,
    "OUTBOX_BYTES": 256 * 1024,
    "BODY_TIMEOUT": 10.0,
    "METRICS": False,  # validated by flask_athena.ops
    "REPORT_INTERVAL": 2.0,  # validated by flask_athena.ops
    "SHARED_STREAM": True,
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class AthenaConfig:
    """The validated ``ATHENA_*`` settings of one app."""

    url_prefix: str
    broker_url: str | None
    heartbeat: float
    page_timeout: float
    call_timeout: float
    max_body_size: int
    outbox_size: int
    max_pages_per_session: int
    max_streams_per_session: int
    max_pending_calls: int
    allowed_origins: frozenset[str]
    fast_calls: bool = True
    presence_max_members: int = 10_000
    presence_max_meta: int = 1024
    #: Reverse proxies in front whose X-Forwarded-* headers are trusted (0: none).
    proxy_hops: int = 0
    #: Pages / event streams one worker holds at most (all clients together).
    max_pages: int = 20_000
    max_streams: int = 20_000
    #: Pages / event streams one client address holds at most on one worker.
    max_pages_per_client: int = 256
    max_streams_per_client: int = 128
    #: Bytes of unacknowledged messages kept per page (as well as OUTBOX_SIZE).
    outbox_bytes: int = 256 * 1024
    #: Seconds a POST body may take to arrive.
    body_timeout: float = 10.0
    #: The tabs of one browser share one event stream (DESIGN §9); False: one per tab.
    shared_stream: bool = True

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> AthenaConfig:
        """Read and validate every ``ATHENA_*`` key of ``config`` (a Flask config).

        Raises :class:`~flask_athena.errors.ConfigurationError` naming the bad key.
        """

        def number(key: str, kind: type, minimum: float) -> Any:
            value = config[f"ATHENA_{key}"]
            # NaN passes every comparison below and infinity breaks int() and
            # gevent timers: refuse both here, naming the key.
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or value != value
                or value in (float("inf"), float("-inf"))
            ):
                raise ConfigurationError(f"ATHENA_{key} must be a finite number, got {value!r}")
            if kind is int and value != int(value):
                raise ConfigurationError(f"ATHENA_{key} must be a whole number, got {value!r}")
            if value < minimum:
                raise ConfigurationError(f"ATHENA_{key} must be >= {minimum}, got {value!r}")
            return kind(value)

        prefix = config["ATHENA_URL_PREFIX"]
        if not isinstance(prefix, str) or not prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigurationError(
                f"ATHENA_URL_PREFIX must start with '/' and not end with one, got {prefix!r}"
            )
        broker = config["ATHENA_BROKER_URL"]
        if broker is not None and not (isinstance(broker, str) and broker.startswith("redis")):
            raise ConfigurationError(
                f"ATHENA_BROKER_URL must be None or a redis:// URL, got {broker!r}"
            )
        origins = config["ATHENA_ALLOWED_ORIGINS"]
        if isinstance(origins, str):
            origins = [o for o in origins.replace(",", " ").split() if o]
        if not isinstance(origins, (list, tuple, set, frozenset)) or not all(
            isinstance(o, str) and "://" in o for o in origins
        ):
            raise ConfigurationError(
                "ATHENA_ALLOWED_ORIGINS must be a list of origins like 'https://example.com'"
            )
        fast = config["ATHENA_FAST_CALLS"]
        if isinstance(fast, str) and fast.strip().lower() in _TRUE + _FALSE:
            fast = fast.strip().lower() in _TRUE  # from config_from_env()
        if not isinstance(fast, bool):
            raise ConfigurationError(f"ATHENA_FAST_CALLS must be True or False, got {fast!r}")
        heartbeat = number("HEARTBEAT", float, 0.05)
        page_timeout = number("PAGE_TIMEOUT", float, 0.1)
        shared = config["ATHENA_SHARED_STREAM"]
        if isinstance(shared, str) and shared.strip().lower() in _TRUE + _FALSE:
            shared = shared.strip().lower() in _TRUE  # from config_from_env()
        if not isinstance(shared, bool):
            raise ConfigurationError(f"ATHENA_SHARED_STREAM must be True or False, got {shared!r}")
        return cls(
            url_prefix=prefix,
            broker_url=broker,
            heartbeat=heartbeat,
            page_timeout=page_timeout,
            call_timeout=number("CALL_TIMEOUT", float, 0.01),
            max_body_size=number("MAX_BODY_SIZE", int, 256),
            outbox_size=number("OUTBOX_SIZE", int, 1),
            max_pages_per_session=number("MAX_PAGES_PER_SESSION", int, 1),
            max_streams_per_session=number("MAX_STREAMS_PER_SESSION", int, 1),
            max_pending_calls=number("MAX_PENDING_CALLS", int, 1),
            allowed_origins=frozenset(o.rstrip("/") for o in origins),
            fast_calls=fast,
            presence_max_members=number("PRESENCE_MAX_MEMBERS", int, 1),
            presence_max_meta=number("PRESENCE_MAX_META", int, 64),
            proxy_hops=number("PROXY_HOPS", int, 0),
            max_pages=number("MAX_PAGES", int, 1),
            max_streams=number("MAX_STREAMS", int, 1),
            max_pages_per_client=number("MAX_PAGES_PER_CLIENT", int, 1),
            max_streams_per_client=number("MAX_STREAMS_PER_CLIENT", int, 1),
            outbox_bytes=number("OUTBOX_BYTES", int, 1024),
            body_timeout=number("BODY_TIMEOUT", float, 0.01),
            shared_stream=shared,
        )


def config_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``ATHENA_*`` settings found in ``environ`` (default ``os.environ``), typed
    like their defaults, for ``app.config.update(config_from_env())``.

    A value that does not parse as the default's type raises
    :class:`~flask_athena.errors.ConfigurationError` naming the key.
    """
    if environ is None:
        environ = os.environ
    config: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        raw = environ.get(f"ATHENA_{key}")
        if raw is None:
            continue
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            config[f"ATHENA_{key}"] = raw
            continue
        try:
            config[f"ATHENA_{key}"] = int(raw) if isinstance(default, int) else float(raw)
        except ValueError:
            raise ConfigurationError(f"ATHENA_{key} must be a number, got {raw!r}") from None
    return config
