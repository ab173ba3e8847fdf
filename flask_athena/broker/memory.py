"""The embedded in-process broker (the default): no service needed.

Everything lives in the worker's memory, so one gunicorn gevent worker (or the
gevent dev server) holds every page. Greenlets are cooperative, so none of this
needs locks: no method below yields between reading and writing state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING

from gevent.event import Event

from ..protocol import sse_data, sse_frame
from .loops import LoopHealth

if TYPE_CHECKING:
    from ..presence import PresenceBackend
    from ..state import AthenaState
    from . import Deliver, Outbox


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
        "acked",
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
        #: The highest seq the browser acknowledged (it has every message up to it).
        self.acked = 0
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
        if self.on_backlog is not None and (
            len(frames) > self._size // 2
            or (max_bytes is not None and self._bytes > max_bytes // 2)
        ):
            self.on_backlog()
        return seq

    def ack(self, seq: int) -> None:
        if self.closed:
            return  # nothing kept (publish after close keeps nothing either)
        self.acked = max(self.acked, min(seq, self.last_seq))
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


class MemoryBroker:
    """Outboxes in this process; a broadcast goes straight to this worker's topics."""

    #: Shown by the inspector and the CLI.
    kind = "memory"

    def __init__(self, outbox_bytes: int | None = None) -> None:
        self._outbox_bytes = outbox_bytes
        #: Delivers broadcasts to this worker's elements (set by ``topics.Topics``).
        self.on_broadcast: Deliver | None = None
        #: Never called: pages of this broker lose nothing they could lose elsewhere.
        self.on_lost: Callable[[str, str], None] | None = None

    @property
    def worker_id(self) -> str:
        """``"local"``: there is one worker."""
        return "local"

    @property
    def link(self) -> None:
        """``None``: every page lives in this process."""
        return None

    def create_outbox(self, page_id: str, size: int) -> MemoryOutbox:
        """A :class:`MemoryOutbox` of ``size`` messages (and ``ATHENA_OUTBOX_BYTES``)."""
        return MemoryOutbox(size, self._outbox_bytes)

    def register_page(self, page_id: str, outbox: Outbox) -> None:
        """Nothing to record: every page of this broker lives in this process."""

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Deliver in the calling greenlet; return how many elements got it (never blocks)."""
        deliver = self.on_broadcast
        return deliver(topic, method, args_json) if deliver is not None else 0

    def create_presence(self, state: AthenaState) -> PresenceBackend:
        """The in-process presence table (:class:`~flask_athena.presence.LocalPresence`)."""
        from ..presence import LocalPresence

        return LocalPresence(state)

    def health(self) -> list[LoopHealth]:
        """``[]``: this broker runs no background loop."""
        return []

    def close(self) -> None:
        """Nothing runs: nothing to stop."""
