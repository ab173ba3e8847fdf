"""Liveness: which workers beat, and the TTLs of the pages a worker owns.

Each worker keeps ``athena:worker:<wid>`` alive (TTL ``WORKER_TTL``, refreshed
every ``WORKER_BEAT``) and its pages' keys (TTL ``PAGE_TTL``, refreshed every
``PAGE_REFRESH``). A page whose owner's key is gone is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

import gevent

from .. import signals
from .loops import Loop, backoff
from .redis_common import (
    PAGE_REFRESH,
    PAGE_TTL,
    WORKER_BEAT,
    WORKER_TTL,
    Connection,
    out_key,
    page_key,
    worker_key,
)

if TYPE_CHECKING:
    from .redis_outbox import RedisOutbox

logger = logging.getLogger("flask_athena")


class Heartbeat(Loop):
    """Keeps this worker's liveness key and its pages' TTLs fresh.

    ``page_lost(page_id, what)`` is called (in this greenlet) when an owned
    page's keys vanished (``"lost"``) or the worker serving its stream died
    (``"reader"``).
    """

    name = "heartbeat"

    def __init__(
        self, outboxes: dict[str, RedisOutbox], page_lost: Callable[[str, str], None]
    ) -> None:
        super().__init__()
        self._outboxes = outboxes
        self._page_lost = page_lost
        self._conn: Connection | None = None

    def attach(self, conn: Connection) -> None:
        """Use ``conn`` (this process's connection) from now on."""
        self._conn = conn

    def run(self) -> None:
        """The loop: beat every second; refresh the TTLs of owned pages; report lost ones."""
        conn = self._conn
        assert conn is not None
        tries = 0
        last_pages = 0.0
        while True:
            try:
                conn.client.set(worker_key(conn.wid), "1", ex=WORKER_TTL)
                if tries:
                    signals.broker_reconnected.send(conn.app)
                tries = 0
                now = monotonic()
                if now - last_pages >= PAGE_REFRESH:
                    last_pages = now
                    self._refresh_pages(conn)
                gevent.sleep(WORKER_BEAT)
            except Exception as exc:
                if conn.transient(exc) or isinstance(exc, conn.errors.RedisError):
                    tries += 1
                    logger.warning("flask_athena: Redis heartbeat failed (%s)", exc)
                    conn.failed("heartbeat", exc)
                    gevent.sleep(backoff(tries))
                else:  # boundary: a hook raised in page_lost; keep beating
                    self.item_failed("a page refresh", exc)
                    gevent.sleep(WORKER_BEAT)

    def _refresh_pages(self, conn: Connection) -> None:
        outboxes = [o for o in self._outboxes.values() if not o.closed]
        if not outboxes:
            return
        pipe = conn.client.pipeline(transaction=False)
        readers = [o for o in outboxes if o.reader is not None]
        for outbox in outboxes:
            pipe.expire(page_key(outbox.page_id), PAGE_TTL)
            pipe.expire(out_key(outbox.page_id), PAGE_TTL)
        for outbox in readers:
            pipe.exists(worker_key(outbox.reader or ""))
        results = pipe.execute()
        lost = [o for i, o in enumerate(outboxes) if not results[2 * i]]
        dead = [o for i, o in enumerate(readers) if not results[2 * len(outboxes) + i]]
        for outbox in dead:
            outbox.reader = None
            self._page_lost(outbox.page_id, "reader")
        for outbox in lost:
            # Our keys expired (Redis was unreachable longer than their TTL,
            # and another worker declared us dead): the page cannot be
            # reached any more, so close it rather than leak it.
            if not outbox.closed:
                self._page_lost(outbox.page_id, "lost")


class LivenessCache:
    """Whether other workers beat, asked often (every idle stream, every second)."""

    #: Entries kept at most (then the cache starts over).
    LIMIT = 10_000

    def __init__(self) -> None:
        self._seen: dict[str, tuple[float, bool]] = {}

    def cached(self, wid: str) -> bool | None:
        """What :meth:`check` found less than ``WORKER_BEAT`` ago, else ``None``."""
        seen = self._seen.get(wid)
        if seen is not None and monotonic() - seen[0] < WORKER_BEAT:
            return seen[1]
        return None

    def check(self, conn: Connection, wid: str) -> bool:
        """Whether worker ``wid`` beats (one ``EXISTS``; raises redis-py's errors)."""
        alive = bool(conn.client.exists(worker_key(wid)))
        if len(self._seen) > self.LIMIT:
            self._seen.clear()
        self._seen[wid] = (monotonic(), alive)
        return alive
