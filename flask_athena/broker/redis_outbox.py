"""The per-page stream handles of the Redis broker.

:class:`RedisOutbox` is the owner's handle on a page's stream; :class:`RedisReader`
is a stream served by another worker. Both leave the I/O to the broker's
loops (the writer, the poller) through :class:`~flask_athena.broker.redis.RedisBroker`'s
public methods. ``docs/scale-out.rst`` has the design.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gevent.event import Event

from ..protocol import valid_text
from ..sse import message_of_frame
from .memory import MemoryOutbox

if TYPE_CHECKING:
    from .redis import RedisBroker


class RedisOutbox:
    """The owner's handle on one page's stream (see :class:`~flask_athena.broker.Outbox`).

    Every message stays in a local
    :class:`~flask_athena.broker.memory.MemoryOutbox`, which serves a stream
    the owner holds itself (never reading Redis: a broadcast that wakes
    thousands of streams costs no Redis round trip per stream). The Redis
    copy (for a stream on another worker) is written only while another
    worker serves the page's stream, the **mirror**: :meth:`served_by` with
    a worker starts it by queueing what the local copy keeps, and from then
    on every message, and every ack's trim, is queued for Redis too, until
    :meth:`served_by` ``None`` (or the reader's worker died). The owner's
    death loses the page anyway, so a copy nobody reads is not written.
    While mirrored both copies are trimmed by the same acks and bounded by
    the same size in messages and in bytes: the local copy decides which
    messages the bounds drop (:attr:`first_seq`) and the writer trims the
    Redis stream to the same place with each message it adds, so a reader
    on any worker that needs a dropped message is told ``gone``.

    :meth:`publish` numbers the message at once and queues it for the
    broker's writer greenlet, which keeps the order. It blocks only while
    the writer's queue is full (bounded: ``ROOM_WAIT`` seconds, then
    :class:`~flask_athena.errors.BrokerUnavailable`).
    """

    def __init__(
        self, broker: RedisBroker, page_id: str, size: int, max_bytes: int | None = None
    ) -> None:
        self._broker = broker
        self.page_id = page_id
        self.size = size
        self._frames = MemoryOutbox(size, max_bytes, wakeups=broker.local_wakeups)
        self.closed = False
        self.on_backlog: Callable[[], None] | None = None
        #: Worker id serving this page's stream when that is another worker
        #: (then the Redis copy is written: the mirror).
        self.reader: str | None = None

    @property
    def last_seq(self) -> int:
        """The seq of the last message published (the local copy's)."""
        return self._frames.last_seq

    @property
    def first_seq(self) -> int:
        """The seq of the oldest message kept: the Redis stream keeps none before it."""
        return self._frames.first_seq

    @property
    def acked(self) -> int:
        """The highest seq the browser acknowledged (the local copy's)."""
        return self._frames.acked

    def __len__(self) -> int:
        return len(self._frames)

    def publish(self, data: str, field: bytes | None = None) -> int:
        """Number the message, keep it locally and queue its write to Redis.

        Blocks only while the writer's queue is full, at most ``ROOM_WAIT``
        seconds; then raises :class:`~flask_athena.errors.BrokerUnavailable`
        (Redis not keeping up) and takes no seq.
        """
        # Everything that can refuse the message runs before a seq is taken,
        # so a refused message exists nowhere (no copy only this worker has,
        # no seq Redis never gets): the writer's room (waits while its queue
        # is full; BrokerUnavailable when Redis is not keeping up). A lone
        # surrogate becomes U+FFFD here, as in the local copy
        # (protocol.valid_text), so the writer greenlet that serves the
        # whole worker never gets text it cannot encode.
        # Nobody reads a closed page (keep no key for it), and only a
        # mirrored page's messages go to Redis.
        if self.reader is not None and not self.closed:
            self._broker.check_room()  # may wait for room
        # Nothing from here to the enqueue yields: the room is still there,
        # and the mirror is on or off for the whole of it.
        mirrored = self.reader is not None and not self.closed
        if field is None and mirrored:
            data = valid_text(data)
        # else: a broadcast built ``field`` from text already valid (see
        # Outbox.publish); the local copy makes its own text valid.
        seq = self._frames.publish(data, field)
        if mirrored:
            self._broker.enqueue(("xadd", self, seq, data))
        if self.on_backlog is not None and self._frames.backlogged:
            self.on_backlog()
        return seq

    def ack(self, seq: int) -> None:
        """Drop the messages up to ``seq`` here and, while mirrored, queue the
        trim for Redis. Never blocks."""
        self._frames.ack(seq)
        if self.reader is not None and not self.closed and seq > 0:
            # The highest ack so far, not this one: POSTs may arrive out of
            # order, and the writer records it for other workers' streams.
            self._broker.enqueue(("ack", self, self._frames.acked, ""))

    def read(self, after: int) -> list[bytes] | None:
        """The frames after ``after`` from the local copy (``None``: cannot replay)."""
        return self._frames.read(after)

    def wait(self, after: int, timeout: float) -> bool:
        """Block until a message after ``after`` exists locally, or ``timeout``."""
        return self._frames.wait(after, timeout)

    def wake(self) -> None:
        """Wake a stream of this worker now and tell another worker's (via Redis)."""
        # A newer stream replaces the current one: end a local one now, and
        # tell a remote one (it compares the page's ``gen`` with its own).
        self._frames.wake()
        # The wake goes to the reader of *now* (the one being replaced).
        # Always queued, mirrored or not: Redis's ``gen`` counts with the
        # page's stream generation, which a remote stream compares.
        self._broker.enqueue(("gen", self, 0, self.reader or ""))

    def served_by(self, worker: str | None) -> None:
        """Remember the worker serving the stream (``None``: the owner) and
        start (or re-do) the mirror for a worker. Never blocks.

        Starting the mirror queues, in this greenlet step (no yield, so
        before any later message), one ``mirror`` write (trim the Redis
        stream to what the local copy keeps, record its ``acked``) and an
        ``xadd`` of every message the local copy keeps; the ones Redis
        already holds fail alone, harmlessly (an id not above the stream's
        top). The caller waits with the broker's ``sync`` for them to be
        written before the other worker reads. Stopping the mirror is safe:
        later messages are above the Redis stream's top id, so a later
        mirror adds them.
        """
        self.reader = worker
        if worker is None or self.closed:
            return
        frames = self._frames
        kept = frames.read(frames.first_seq - 1) or []
        enqueue = self._broker.enqueue
        enqueue(("mirror", self, frames.acked, ""))
        for frame in kept:
            seq, data = message_of_frame(frame)
            enqueue(("xadd", self, seq, data))

    def close(self) -> None:
        """Close the local copy and queue the deletion of the page's keys. Never blocks."""
        if self.closed:
            return
        self.closed = True
        self._frames.close()
        self._broker.enqueue(("close", self, 0, ""))


class RedisReader:
    """A stream served by a worker that does not own the page: reads Redis,
    woken by the owner over pub/sub."""

    def __init__(self, broker: RedisBroker, page_id: str) -> None:
        self._broker = broker
        self.page_id = page_id
        self._event = Event()
        broker.wakeups.add(page_id, self._event)

    def wait(self, timeout: float) -> bool:
        """Block until the owner wakes this reader or ``timeout`` passes; ``True`` when woken."""
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
        """Stop listening for the owner's wake-ups (never blocks)."""
        self._broker.wakeups.discard(self.page_id, self._event)
