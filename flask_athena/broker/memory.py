"""The embedded in-process broker (the default): no service needed.

Everything lives in the worker's memory, so one gunicorn gevent worker (or the
gevent dev server) holds every page. Greenlets are cooperative, so none of this
needs locks: no method below yields between reading and writing state.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any

from gevent.hub import Waiter, get_hub

from ..protocol import sse_data, sse_frame
from .loops import LoopHealth

if TYPE_CHECKING:
    from ..presence import PresenceBackend
    from ..state import AthenaState
    from . import Deliver, Outbox


class Wakeups:
    """Wakes the streams waiting on outboxes that got messages: once per
    event-loop iteration, not once per message.

    A publish does not switch to the stream's greenlet: it marks the outbox
    due (once) and the first mark of a burst starts a zero-delay timer. The
    timer fires in the next iteration of gevent's loop, after the greenlets
    that were ready to run (a broadcast loop, other requests) had their turn,
    and switches to each waiting stream in turn; each stream then reads
    *everything* queued since its last write and writes it as one chunk. So
    a burst of messages costs each stream one wake-up and one ``send``,
    whatever the number of messages in it. A burst ends early, in the
    iteration it happens in, once more than half the outbox waits (see
    :meth:`MemoryOutbox.publish`): coalescing never makes a page ``gone``.

    One per broker (the outboxes of one worker's hub); never yields.
    """

    __slots__ = ("_due", "_timer", "_loop")

    def __init__(self) -> None:
        self._due: list[MemoryOutbox] = []
        self._timer: Any = None
        self._loop: Any = None

    def schedule(self, outbox: MemoryOutbox) -> None:
        """Wake ``outbox``'s waiters in the next loop iteration."""
        self._due.append(outbox)
        timer = self._timer
        if timer is None or not timer.active:
            loop = get_hub().loop
            if timer is None or self._loop is not loop:
                timer = self._timer = loop.timer(0.0)
                self._loop = loop
            timer.start(self._flush)

    def _flush(self) -> None:
        # Runs in the hub. A stream woken here may publish (or close a page)
        # before it blocks again: that goes into a fresh list and a new
        # timer, for the next iteration.
        due, self._due = self._due, []
        for outbox in due:
            outbox.wake_now()


#: For outboxes made without a broker (tests, tools).
_WAKEUPS = Wakeups()
#: A wake-up is scheduled for the next loop iteration (Wakeups) / this one.
_WAKE_NEXT = 1
_WAKE_NOW = 2


class MemoryOutbox:
    """A bounded deque of pre-framed SSE messages plus the streams waiting on it.

    Bounded in messages (``size``) and in bytes (``max_bytes``, None: no
    byte bound): past either, the oldest messages are dropped. The newest
    message is always kept, whatever its size.

    A waiting stream is woken through :class:`Wakeups`, once per burst of
    messages (see there).
    """

    __slots__ = (
        "_frames",
        "_first_seq",
        "last_seq",
        "acked",
        "_size",
        "_bytes",
        "_max_bytes",
        "_waiters",
        "_wake_due",
        "_wakeups",
        "closed",
        "on_backlog",
    )

    def __init__(
        self, size: int, max_bytes: int | None = None, wakeups: Wakeups | None = None
    ) -> None:
        self._frames: deque[bytes] = deque()
        self._first_seq = 1  # seq of _frames[0]
        self.last_seq = 0
        #: The highest seq the browser acknowledged (it has every message up to it).
        self.acked = 0
        self._size = size
        self._bytes = 0  # sum of len(frame) over _frames
        self._max_bytes = max_bytes
        # The greenlets blocked in wait() (usually one stream; two while a
        # newer stream replaces an older one), None when there are none.
        self._waiters: list[Waiter] | None = None
        self._wake_due = 0  # 0, or _WAKE_NEXT / _WAKE_NOW: a wake-up is scheduled
        self._wakeups = _WAKEUPS if wakeups is None else wakeups
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

    def publish(self, data: str, field: bytes | None = None) -> int:
        """Queue one message; return its seq. Never yields.

        ``field``: ``sse_data(data)``, when the caller built it already (a
        broadcast builds it once for every element with the same widget id).
        Raises only for a ``data`` that is not a str, and then takes no seq.
        """
        # The frame is built before its seq is taken: if building it raised,
        # the seq would be counted for a message that does not exist, and a
        # reader would see that id again and a gap.
        data_field = sse_data(data) if field is None else field
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
        backlog = self.backlogged
        if self._waiters is not None:
            if not self._wake_due:
                self._wake_due = _WAKE_NEXT
                self._wakeups.schedule(self)
            if backlog and self._wake_due != _WAKE_NOW:
                # More than half the outbox waits: a publisher this fast
                # would trim messages the stream never saw before the next
                # loop iteration. Wake it in this one; its writes (and the
                # slow-consumer cut, flask_athena.stream) take over from here.
                self._wake_due = _WAKE_NOW
                get_hub().loop.run_callback(self.wake_now)
        if backlog and self.on_backlog is not None:
            self.on_backlog()
        return seq

    def ack(self, seq: int) -> None:
        """Drop the messages up to ``seq`` (the browser has them). Never yields."""
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
        """The frames after ``after``, or ``None`` when replay is impossible. Never yields."""
        if self.closed or after > self.last_seq or after + 1 < self._first_seq:
            return None
        # The frames wanted are the newest: walk from the right end, so that a
        # stream keeping up costs O(new frames), not O(frames still unacked).
        frames = list(islice(reversed(self._frames), self.last_seq - after))
        frames.reverse()
        return frames

    def wait(self, after: int, timeout: float) -> bool:
        """Block the calling greenlet until a message after ``after`` exists, the
        outbox closes or is woken, or ``timeout`` passes; ``True`` unless timed out.
        """
        if self.closed or self.last_seq > after:
            return True
        hub = get_hub()
        waiter = Waiter(hub)
        waiters = self._waiters
        if waiters is None:
            self._waiters = [waiter]
        else:
            waiters.append(waiter)
        timer = hub.loop.timer(timeout)
        try:
            timer.start(waiter.switch, False)
            return bool(waiter.get())
        finally:
            timer.close()
            waiters = self._waiters
            if waiters is not None:
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters = None

    def wake(self) -> None:
        """Wake the waiting streams in the next loop iteration. Never yields."""
        if self._waiters is not None and not self._wake_due:
            self._wake_due = _WAKE_NEXT
            self._wakeups.schedule(self)

    def wake_now(self) -> None:
        """Switch to every greenlet waiting now (from the hub: :class:`Wakeups`)."""
        self._wake_due = 0
        waiters = self._waiters
        if waiters is not None:
            # A copy: each woken greenlet removes its waiter, and may wait
            # again (a new waiter, woken by the next message, not by this).
            for waiter in list(waiters):
                waiter.switch(True)

    def served_by(self, worker: str | None) -> None:
        """Every stream is served by this worker: nothing to remember."""

    def close(self) -> None:
        """Keep nothing from now on and wake the waiting streams. Never yields."""
        self.closed = True
        self._frames.clear()
        self._bytes = 0
        self.wake()


class MemoryBroker:
    """Outboxes in this process; a broadcast goes straight to this worker's topics."""

    #: Shown by the inspector and the CLI.
    kind = "memory"

    def __init__(self, outbox_bytes: int | None = None) -> None:
        self._outbox_bytes = outbox_bytes
        self._wakeups = Wakeups()
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
        return MemoryOutbox(size, self._outbox_bytes, self._wakeups)

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
