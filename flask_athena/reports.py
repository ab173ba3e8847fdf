"""Worker reports: every worker's live view, in Redis, for the inspector and the CLI.

With the Redis broker, pages live in many processes. Rather than asking each
worker on demand (a new request type for the broker's protocol), each worker
writes a JSON snapshot of its pages (:meth:`Ops.snapshot
<flask_athena.ops.Ops.snapshot>`) to its own key every
``ATHENA_REPORT_INTERVAL`` seconds, with a TTL of three intervals, so a dead
worker's report disappears by itself. Readers (the inspector, ``flask athena
pages``, which need not be workers) list the keys with ``SCAN``.

Keys: ``athena:report:<db>:<app namespace>:<worker id>``, the namespace being
the one the broker uses for its channels (import name + URL prefix), so two
apps sharing one Redis do not see each other's pages. A report never holds a
page id, only :func:`~flask_athena.ops.page_ref`.

The writer has its own Redis connection (never the broker's pool, so a burst
of page traffic does not delay reports and the other way round).
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import gevent

from .broker.loops import backoff

if TYPE_CHECKING:
    from flask import Flask

    from .ops import Ops

logger = logging.getLogger("flask_athena")

#: How many report keys one SCAN step asks for.
SCAN_COUNT = 500


def report_prefix(app: Flask) -> str:
    """The key prefix of ``app``'s worker reports (ends with ``:``)."""
    config = app.extensions["athena"].config
    db = redis_client(config.broker_url).connection_pool.connection_kwargs.get("db", 0)
    return f"athena:report:{db}:{app.import_name}{config.url_prefix}:"


def redis_client(url: str) -> Any:
    """A small Redis client of its own (not the broker's pool)."""
    import redis

    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
    )


def read_reports(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Every live worker's latest report under ``prefix``."""
    keys = sorted(client.scan_iter(match=f"{prefix}*", count=SCAN_COUNT))
    reports = []
    for raw in client.mget(keys) if keys else []:
        if raw is None:  # expired between SCAN and MGET
            continue
        try:
            report = json.loads(raw)
        except ValueError:
            continue
        if isinstance(report, dict):
            reports.append(report)
    return reports


class ReportWriter:
    """Writes this worker's report to Redis every interval (one greenlet per process)."""

    def __init__(self, ops: Ops) -> None:
        self.ops = ops
        self.interval = ops.report_interval
        self._url: str = ops.state.config.broker_url or ""
        self._prefix: str | None = None
        self._client: Any = None
        self._pid: int | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._key: str | None = None  # the key last written by this process

    @property
    def prefix(self) -> str:
        if self._prefix is None:
            self._prefix = report_prefix(self.ops.app)
        return self._prefix

    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            self._client = redis_client(self._url)
        return self._client

    def ensure_started(self) -> None:
        """Start the writer in this process (once per process: survives fork)."""
        if self._pid == os.getpid() and self._greenlet is not None and not self._greenlet.dead:
            return
        self._pid = os.getpid()
        self._client = None
        self._greenlet = gevent.spawn(self._write_forever)

    def read_all(self) -> list[dict[str, Any]]:
        """Every worker's latest report ([] when Redis is unreachable: logged)."""
        try:
            return read_reports(self.client(), self.prefix)
        except Exception as exc:  # the inspector shows this worker anyway
            logger.warning("flask_athena: worker reports unreadable (%s)", exc)
            return []

    def write_once(self) -> None:
        snapshot = self.ops.snapshot()
        if self.ops.metrics is not None:
            self.ops.metrics.broker_loops(snapshot["broker_loops"])
        key = self.prefix + str(snapshot["worker"])
        ttl = max(1, int(self.interval * 3 + 0.999))
        self.client().set(key, json.dumps(snapshot), ex=ttl)
        self._key = key

    def _write_forever(self) -> None:
        tries = 0
        while True:
            try:
                self.write_once()
                tries = 0
                gevent.sleep(self.interval)
            except Exception as exc:  # the writer must outlive Redis outages
                tries += 1
                logger.warning("flask_athena: worker report not written (%s)", exc)
                gevent.sleep(max(self.interval, backoff(tries)))

    def stop(self) -> None:
        """Stop writing and delete this worker's report (best effort)."""
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is None:
            return
        greenlet.kill(block=True, timeout=5)
        key, self._key = self._key, None
        if self._pid == os.getpid() and key is not None:
            try:
                with gevent.Timeout(2, False):
                    self.client().delete(key)
            except Exception:  # the TTL removes it anyway
                pass
