"""Worker reports and operator checks on the Redis broker.

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
page id, only :func:`~flask_athena.inspect.page_ref`.

The writer has its own Redis connection (never the broker's pool, so a burst
of page traffic does not delay reports and the other way round); so do the
operator's commands, which run in processes that are not workers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

import gevent

from . import BrokerCheck
from .loops import Loop, backoff
from .redis_common import WORKER_KEY_PATTERN

if TYPE_CHECKING:
    from . import Report

logger = logging.getLogger("flask_athena")

#: How many report keys one SCAN step asks for.
SCAN_COUNT = 500


def redis_client(url: str) -> Any:
    """A small Redis client of its own (not the broker's pool); connects on first use."""
    import redis

    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
    )


def report_prefix(client: Any, namespace: str) -> str:
    """The key prefix of the reports of the app ``namespace`` names (ends with ``:``)."""
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return f"athena:report:{db}:{namespace}:"


def read_reports(client: Any, prefix: str) -> list[Report]:
    """Every live worker's latest report under ``prefix`` (blocks for the round trips)."""
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


def check(client: Any, prefix: str, pings: int) -> BrokerCheck:
    """Measure ``pings`` PINGs, read the server's version, count workers and
    reports under ``prefix``. Blocks; raises redis-py's errors."""
    times = []
    for _ in range(pings):
        start = perf_counter()
        client.ping()
        times.append((perf_counter() - start) * 1000)
    info = client.info("server")
    workers = sum(1 for _ in client.scan_iter(match=WORKER_KEY_PATTERN, count=SCAN_COUNT))
    reports = sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=SCAN_COUNT))
    return BrokerCheck(f"Redis {info.get('redis_version', '?')}", times, workers, reports)


class ReportWriter(Loop):
    """Writes this worker's report to Redis every interval (one loop per process)."""

    def __init__(
        self, url: str, namespace: str, snapshot: Callable[[], Report], interval: float
    ) -> None:
        super().__init__("reports")
        self._url = url
        self._namespace = namespace
        self._snapshot = snapshot
        #: Seconds between two reports.
        self.interval = interval
        self._prefix: str | None = None
        self._client: Any = None
        self._client_pid: int | None = None
        self._key: str | None = None  # the key last written by this process

    @property
    def prefix(self) -> str:
        """The key prefix of this app's reports (connects nothing)."""
        if self._prefix is None:
            self._prefix = report_prefix(self.client(), self._namespace)
        return self._prefix

    def client(self) -> Any:
        """This process's client of the writer (made anew after a fork)."""
        if self._client is None or self._client_pid != os.getpid():
            self._client = redis_client(self._url)
            self._client_pid = os.getpid()
        return self._client

    def ensure_started(self) -> None:
        """Start the writer in this process (once per process: survives fork)."""
        self.start()

    def read_all(self) -> list[Report]:
        """Every worker's latest report ([] when Redis is unreachable: logged)."""
        try:
            return read_reports(self.client(), self.prefix)
        except Exception as exc:  # the inspector shows this worker anyway
            logger.warning("flask_athena: worker reports unreadable (%s)", exc)
            return []

    def write_once(self) -> None:
        """Write one report now (blocks for the round trip; raises redis-py's errors)."""
        snapshot = self._snapshot()
        key = self.prefix + str(snapshot["worker"])
        ttl = max(1, int(self.interval * 3 + 0.999))
        self.client().set(key, json.dumps(snapshot), ex=ttl)
        self._key = key

    def run(self) -> None:
        """The loop: a report every interval; an outage is logged and retried."""
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

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop writing (joined within ``timeout``) and delete this worker's
        report (best effort, bounded)."""
        stopped = super().stop(timeout)
        key, self._key = self._key, None
        if key is not None and self._client_pid == os.getpid():
            try:
                with gevent.Timeout(2, False):
                    self.client().delete(key)
            except Exception:  # the TTL removes it anyway
                pass
        return stopped
