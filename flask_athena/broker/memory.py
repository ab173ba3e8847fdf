"""The embedded in-process broker (the default): no service needed.

Everything lives in the worker's memory, so one gunicorn gevent worker (or the
gevent dev server) holds every page. Greenlets are cooperative, so none of this
needs locks: no method below yields between reading and writing state.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from gevent.event import Event

from ..protocol import call_message, sse_data, sse_frame

logger = logging.getLogger("flask_athena")


class MemoryOutbox:
    """A bounded deque of pre-framed SSE messages plus a wake-up event.

    Bounded in messages (``size``) and in bytes (``max_bytes``, None: no
    byte bound): past either, the oldest messages are dropped. The newest
    message is always kept, whatever its size.
    """

    __slots__ = (
        "_frames",
        "_first_seq",
        "last_seq",
        "_size",
        "_bytes",
        "_max_bytes",
        "_event",
        "closed",
        "on_backlog",
    )

    def __init__(self, size: int, max_bytes: int | None = None) -> None:
        self._frames: deque[bytes] = deque()
        self._first_seq = 1  # seq of _frames[0]
        self.last_seq = 0
        self._size = size
        self._bytes = 0  # sum of len(frame) over _frames
        self._max_bytes = max_bytes
        self._event: Event | None = None
        self.closed = False
        self.on_backlog: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def nbytes(self) -> int:
        """Bytes of the messages kept now."""
        return self._bytes

    @property
    def first_seq(self) -> int:
        """The seq of the oldest message kept (``last_seq + 1`` when none is).

        Every message before it was acknowledged or dropped by a bound: the
        Redis outbox trims its stream to the same place.
        """
        return self._first_seq

    @property
    def backlogged(self) -> bool:
        """Whether more than half of either bound is used (the reader lags)."""
        max_bytes = self._max_bytes
        return len(self._frames) > self._size // 2 or (
            max_bytes is not None and self._bytes > max_bytes // 2
        )

    def publish(self, data: str) -> int:
        """Queue one message; return its seq. Never yields.

        Raises only for a ``data`` that is not a str, and then takes no seq.
        """
        # The frame is built before its seq is taken: if building it raised,
        # the seq would be counted for a message that does not exist, and a
        # reader would see that id again and a gap.
        data_field = sse_data(data)
        seq = self.last_seq + 1
        if self.closed:
            # Nobody reads a closed page: keep nothing (a broadcast racing
            # the close must not grow memory that is never freed).
            self.last_seq = seq
            return seq
        frame = sse_frame(seq, data_field)
        frames = self._frames
        frames.append(frame)
        self.last_seq = seq
        self._bytes += len(frame)
        max_bytes = self._max_bytes
        while len(frames) > self._size or (
            max_bytes is not None and self._bytes > max_bytes and len(frames) > 1
        ):
            # The browser fell too far behind (or never acked): the oldest
            # message is dropped. A reader that still needs it gets None from
            # read() and the browser is told the page is gone: an explicit
            # failure, never a silent gap.
            self._bytes -= len(frames.popleft())
            self._first_seq += 1
        if self._event is not None:
            self._event.set()
        if self.on_backlog is not None and self.backlogged:
            self.on_backlog()
        return seq

    def ack(self, seq: int) -> None:
        if self.closed:
            return  # nothing kept (publish after close keeps nothing either)
        drop = min(seq, self.last_seq) - self._first_seq + 1
        frames = self._frames
        for _ in range(max(drop, 0)):
            self._bytes -= len(frames.popleft())
        if drop > 0:
            self._first_seq += drop

    def read(self, after: int) -> list[bytes] | None:
        if self.closed or after > self.last_seq or after + 1 < self._first_seq:
            return None
        # The frames wanted are the newest: walk from the right end, so that a
        # stream keeping up costs O(new frames), not O(frames still unacked).
        frames = list(islice(reversed(self._frames), self.last_seq - after))
        frames.reverse()
        return frames

    def wait(self, after: int, timeout: float) -> bool:
        if self.closed or self.last_seq > after:
            return True
        event = self._event
        if event is None or event.is_set():
            event = self._event = Event()
        return bool(event.wait(timeout))

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()

    def served_by(self, worker: str | None) -> None:
        """Every stream is served by this worker: nothing to remember."""

    def close(self) -> None:
        self.closed = True
        self._frames.clear()
        self._bytes = 0
        if self._event is not None:
            self._event.set()


def _close_quietly(page: Any) -> None:
    try:
        page.close("error")
    except Exception:
        logger.exception("flask_athena: closing a failed page raised")


class LocalTopics:
    """Which of this worker's elements joined which topic.

    Both brokers keep one: a broadcast ends as a delivery to the elements of
    each worker (with Redis, every worker delivers to its own).
    """

    __slots__ = ("_members",)

    def __init__(self) -> None:
        # topic -> elements joined (a dict keeps join order, like an ordered set)
        self._members: dict[str, dict[Any, None]] = {}

    def subscribe(self, topic: str, element: Any) -> None:
        self._members.setdefault(topic, {})[element] = None

    def unsubscribe(self, topic: str, element: Any) -> None:
        members = self._members.get(topic)
        if members is not None:
            members.pop(element, None)
            if not members:
                del self._members[topic]

    def members(self, topic: str) -> list[Any]:
        """This worker's elements joined to ``topic``, in join order (a copy)."""
        return list(self._members.get(topic, ()))

    def deliver(self, topic: str, method: str, args_json: str) -> int:
        """Queue ``method(*args)`` for every member; return how many got it."""
        members = self._members.get(topic)
        if not members:
            return 0
        delivered = 0
        failed = 0
        for element in list(members):  # a receiving page may close (and leave) meanwhile
            page = element.page
            if page is None:
                continue
            try:
                page.outbox.publish(call_message(None, element.id, method, args_json))
            except Exception:
                # One member's page failing (a bug, a broken outbox) must not
                # cost the rest of the room the message: that page is closed
                # (its browser learns it is gone and reloads: an explicit
                # failure, not a silent gap) and the loop goes on.
                failed += 1
                if failed == 1:
                    logger.exception("flask_athena: broadcast to one page failed; closing it")
                _close_quietly(page)
            else:
                delivered += 1
        if failed > 1:
            logger.error("flask_athena: broadcast failed for %d pages; closed them", failed)
        return delivered

    def clear(self) -> None:
        self._members.clear()


class MemoryBroker:
    """Outboxes and topics in this process."""

    def __init__(self, outbox_bytes: int | None = None) -> None:
        self._topics = LocalTopics()
        self._outbox_bytes = outbox_bytes

    def create_outbox(self, page_id: str, size: int) -> MemoryOutbox:
        return MemoryOutbox(size, self._outbox_bytes)

    def register_page(self, page_id: str, outbox: Any) -> None:
        """Nothing to record: every page of this broker lives in this process."""

    def subscribe(self, topic: str, element: Any) -> None:
        self._topics.subscribe(topic, element)

    def unsubscribe(self, topic: str, element: Any) -> None:
        self._topics.unsubscribe(topic, element)

    def members(self, topic: str) -> list[Any]:
        return self._topics.members(topic)

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        return self._topics.deliver(topic, method, args_json)

    def close(self) -> None:
        self._topics.clear()
