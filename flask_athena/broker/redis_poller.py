"""The poller: reads of the streams a worker serves for pages other workers own.

A broadcast can wake thousands of such streams at once. Each stream asks
:meth:`StreamPoller.poll` and waits; the poller greenlet sends every poll
queued meanwhile in one pipeline, so the burst costs a few round trips on one
connection, not a pool checkout per stream.
"""

from __future__ import annotations

from collections import deque

from gevent.event import AsyncResult, Event

from ..errors import BrokerUnavailable
from ..protocol import sse_message
from .loops import Loop
from .redis_common import IDLE_WAIT, Connection, entry_seq, out_key, page_key

#: ``(gen, frames)``: the page's stream generation (``None``: the page is
#: gone) and the SSE frames after the cursor (``None``: trimmed past it).
PollAnswer = tuple[int | None, list[bytes] | None]
#: Polls sent in one pipeline at most.
BATCH = 1000


class StreamPoller(Loop):
    """Sends queued stream polls together; a bad poll fails alone."""

    name = "poller"

    def __init__(self) -> None:
        super().__init__()
        self._polls: deque[tuple[str, int, AsyncResult]] = deque()
        self._queued = Event()
        self._conn: Connection | None = None

    def attach(self, conn: Connection) -> None:
        """Use ``conn`` from now on; forget polls queued by another process."""
        self._conn = conn
        self._polls.clear()

    def poll(self, page_id: str, after: int, timeout: float) -> PollAnswer:
        """The page's generation and frames after ``after``.

        Blocks the calling greenlet until the poller answers, at most
        ``timeout`` seconds; raises :class:`BrokerUnavailable`.
        """
        result: AsyncResult = AsyncResult()
        self._polls.append((page_id, after, result))
        self._queued.set()
        if not result.wait(timeout):
            raise BrokerUnavailable("Redis did not answer in time.")
        answer: PollAnswer = result.get(block=False)
        return answer

    def run(self) -> None:
        """The loop: send the polls queued meanwhile in one pipeline and answer each."""
        assert self._conn is not None
        while True:
            if not self._polls:
                self._queued.clear()
                self._queued.wait(IDLE_WAIT)
                continue
            batch = [self._polls.popleft() for _ in range(min(len(self._polls), BATCH))]
            try:
                self._send(batch)
            except Exception as exc:
                if self._conn.transient(exc):
                    self._conn.failed("poll", exc)
                    error = BrokerUnavailable(f"Redis failed: {type(exc).__name__}")
                    for _, _, result in batch:
                        result.set_exception(error)
                    continue
                # One poll is bad: find it, fail it alone.
                for item in batch:
                    try:
                        self._send([item])
                    except Exception as exc:  # boundary: the poller serves everyone
                        self.item_failed("a stream poll", exc)
                        item[2].set_exception(
                            BrokerUnavailable(f"Redis failed: {type(exc).__name__}")
                        )

    def _send(self, batch: list[tuple[str, int, AsyncResult]]) -> None:
        assert self._conn is not None
        pipe = self._conn.client.pipeline(transaction=False)
        for page_id, after, _ in batch:
            pipe.hget(page_key(page_id), "gen")
            pipe.xrange(out_key(page_id), min=f"{after + 1}-0")
        replies = pipe.execute()
        answers = [
            poll_answer(replies[2 * i], replies[2 * i + 1], after)
            for i, (_, after, _) in enumerate(batch)
        ]
        for (_, _, result), answer in zip(batch, answers):
            result.set(answer)


def poll_answer(
    gen: str | None, entries: list[tuple[str, dict[str, str]]], after: int
) -> PollAnswer:
    """The answer to a poll from ``HGET gen`` and ``XRANGE`` (pure)."""
    if gen is None:
        return None, None  # the page is gone
    if entries and entry_seq(entries[0][0]) != after + 1:
        return int(gen), None  # trimmed past ``after``
    return int(gen), [sse_message(entry_seq(eid), fields["d"]) for eid, fields in entries]
