"""Redis key names, timings and the per-page stream handles of the Redis broker.

:class:`RedisOutbox` is the owner's handle on a page's stream; :class:`RedisReader`
is a stream served by another worker. Both leave the I/O to
:class:`~flask_athena.broker.redis.RedisBroker`. ``docs/scale-out.rst`` has the design.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.event import Event

from .memory import MemoryOutbox

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


def entry_seq(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


class RedisOutbox:
    """The owner's handle on one page's stream (see :class:`~flask_athena.broker.Outbox`).

    Every message goes to Redis (for replay on any worker) and stays in a
    local :class:`~flask_athena.broker.memory.MemoryOutbox` too, so a stream
    the owner serves itself never reads Redis: a broadcast that wakes
    thousands of streams costs no Redis round trip per stream. Both copies
    are trimmed by the same acks and bounded by the same size.

    :meth:`publish` never blocks: the message is numbered at once and queued
    for the broker's writer greenlet, which keeps the order.
    """

    def __init__(self, broker: RedisBroker, page_id: str, size: int) -> None:
        self._broker = broker
        self.page_id = page_id
        self.size = size
        self._frames = MemoryOutbox(size)
        self.closed = False
        self.on_backlog: Callable[[], None] | None = None
        #: Worker id serving this page's stream when that is another worker.
        self.reader: str | None = None

    @property
    def last_seq(self) -> int:
        return self._frames.last_seq

    def __len__(self) -> int:
        return len(self._frames)

    def publish(self, data: str) -> int:
        # Everything that can refuse the message runs before a seq is taken,
        # so a refused message exists nowhere (no copy only this worker has,
        # no seq Redis never gets): the writer's room (BrokerUnavailable when
        # Redis is not keeping up), then the encoding (a lone surrogate
        # raises UnicodeEncodeError here, to the caller, never in the writer
        # greenlet that serves the whole worker).
        if not self.closed:  # nobody reads a closed page; keep no key for it
            self._broker._check_room()
        data.encode()
        seq = self._frames.publish(data)
        if not self.closed:
            # Nothing between the check and here yields: the room is still there.
            self._broker._enqueue(("xadd", self, seq, data))
        if self.on_backlog is not None and len(self._frames) > self.size // 2:
            self.on_backlog()
        return seq

    def ack(self, seq: int) -> None:
        self._frames.ack(seq)
        if not self.closed and seq > 0:
            self._broker._enqueue(("ack", self, min(seq, self.last_seq), ""))

    def read(self, after: int) -> list[bytes] | None:
        return self._frames.read(after)

    def wait(self, after: int, timeout: float) -> bool:
        return self._frames.wait(after, timeout)

    def wake(self) -> None:
        # A newer stream replaces the current one: end a local one now, and
        # tell a remote one (it compares the page's ``gen`` with its own).
        self._frames.wake()
        # The wake goes to the reader of *now* (the one being replaced).
        self._broker._enqueue(("gen", self, 0, self.reader or ""))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._frames.close()
        self._broker._enqueue(("close", self, 0, ""))


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
