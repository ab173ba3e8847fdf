"""Redis key names, timings and the per-page stream handles of the Redis broker.

:class:`RedisOutbox` is the owner's handle on a page's stream; :class:`RedisReader`
is a stream served by another worker. Both leave the I/O to
:class:`~flask_athena.broker.redis.RedisBroker`. ``docs/scale-out.rst`` has the design.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.event import Event

if TYPE_CHECKING:
    from .redis import RedisBroker

BROADCAST_CHANNEL = "athena:bc"
#: Seconds a worker's liveness key lives; refreshed every WORKER_BEAT seconds.
WORKER_TTL = 5
WORKER_BEAT = 1.0
#: Seconds a page's keys live without a refresh by their owner.
PAGE_TTL = 15
PAGE_REFRESH = 5.0
#: Seconds a forwarded request may wait in an inbox nobody reads.
INBOX_TTL = 60
#: Messages queued for the writer before publishing fails (a stalled Redis).
MAX_QUEUED = 100_000
#: Forwarded requests one worker runs at once (more wait in its inbox).
MAX_FORWARDED = 500
#: Redis connections one worker opens at most; more requests wait for one.
MAX_REDIS_CONNECTIONS = 64
#: Seconds a request waits for a free Redis connection (then BrokerUnavailable).
POOL_WAIT = 5.0
BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0


def page_key(page_id: str) -> str:
    return f"athena:page:{page_id}"


def out_key(page_id: str) -> str:
    return f"athena:out:{page_id}"


def worker_key(wid: str) -> str:
    return f"athena:worker:{wid}"


def inbox_key(wid: str) -> str:
    return f"athena:inbox:{wid}"


def wake_channel(wid: str) -> str:
    return f"athena:w:{wid}"


def backoff(tries: int) -> float:
    """Seconds before reconnect attempt ``tries`` (from 1): exponential, jittered, capped."""
    return float(random.uniform(0.5, 1.0) * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(tries, 10)))


def entry_seq(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


class RedisOutbox:
    """The owner's handle on one page's stream (see :class:`~flask_athena.broker.Outbox`).

    :meth:`publish` never blocks: the message is numbered at once and queued
    for the broker's writer greenlet, which keeps the order.
    """

    def __init__(self, broker: RedisBroker, page_id: str, size: int) -> None:
        self._broker = broker
        self.page_id = page_id
        self.size = size
        self.last_seq = 0
        #: Highest seq the browser acknowledged (as far as this worker knows).
        self.acked = 0
        self.on_backlog: Callable[[], None] | None = None
        #: Highest seq the writer has stored in Redis.
        self.flushed_seq = 0
        self.closed = False
        #: Worker id serving this page's stream when that is another worker.
        self.reader: str | None = None
        self._event: Event | None = None

    def publish(self, data: str) -> int:
        if self.closed:  # nobody reads a closed page; keep no key for it
            self.last_seq += 1
            return self.last_seq
        self._broker._enqueue(("xadd", self, self.last_seq + 1, data))
        self.last_seq += 1
        if self.on_backlog is not None and self.last_seq - self.acked > self.size // 2:
            self.on_backlog()
        return self.last_seq

    def ack(self, seq: int) -> None:
        if not self.closed and seq > 0:
            self.acked = max(self.acked, min(seq, self.last_seq))
            self._broker._enqueue(("ack", self, self.acked, ""))

    def read(self, after: int) -> list[bytes] | None:
        if self.closed or after > self.last_seq:
            return None
        return self._broker.read_stream(self.page_id, after, self.last_seq)

    def wait(self, after: int, timeout: float) -> bool:
        if self.closed or self.flushed_seq > after:
            return True
        event = self._event
        if event is None or event.is_set():
            event = self._event = Event()
        return bool(event.wait(timeout))

    def wake(self) -> None:
        # A newer stream replaces the current one: end a local one now, and
        # tell a remote one (it compares the page's ``gen`` with its own).
        self._set_event()
        # The wake goes to the reader of *now* (the one being replaced).
        self._broker._enqueue(("gen", self, 0, self.reader or ""))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._set_event()
        self._broker._enqueue(("close", self, 0, ""))

    def _set_event(self) -> None:
        if self._event is not None:
            self._event.set()


class RedisReader:
    """A stream served by a worker that does not own the page: reads Redis,
    woken by the owner over pub/sub."""

    def __init__(self, broker: RedisBroker, page_id: str) -> None:
        self._broker = broker
        self.page_id = page_id
        self._event = Event()
        broker._readers.setdefault(page_id, set()).add(self._event)

    def wait(self, timeout: float) -> bool:
        # Auto-reset before the caller reads: a wake that arrives while it
        # reads sets the event again, so no message is ever waited past.
        woke = self._event.is_set() or bool(self._event.wait(timeout))
        self._event.clear()
        return woke

    def poll(self, after: int) -> tuple[int | None, list[bytes] | None]:
        """``(gen, frames)``: the page's stream generation (``None`` when the
        page is gone) and the frames after ``after`` (``None``: trimmed)."""
        return self._broker.poll_stream(self.page_id, after)

    def close(self) -> None:
        events = self._broker._readers.get(self.page_id)
        if events is not None:
            events.discard(self._event)
            if not events:
                del self._broker._readers[self.page_id]
