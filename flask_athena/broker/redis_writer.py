"""The writer: the one greenlet that writes the streams of the pages a worker owns.

Only the owner writes a page's stream (``athena:out:<page>``). Every write
(a message, an ack's trim, a generation bump, a close) is queued here by the
page's :class:`~flask_athena.broker.redis_outbox.RedisOutbox` and sent in
order, in pipelined batches, by :class:`StreamWriter`. Queueing never blocks,
except a new message while the queue is full (bounded back-pressure, see
:meth:`StreamWriter.check_room`).
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.hub import get_hub

from ..errors import BrokerUnavailable
from .loops import Loop, backoff
from .redis_common import (
    IDLE_WAIT,
    MAX_QUEUED,
    PAGE_TTL,
    ROOM_WAIT,
    Connection,
    out_key,
    page_key,
    wake_channel,
)

if TYPE_CHECKING:
    from .redis_outbox import RedisOutbox

logger = logging.getLogger("flask_athena")

#: One queued stream write: ``(op, outbox, seq, data)`` with ``op`` one of
#: ``"xadd"`` (message ``data`` numbered ``seq``), ``"ack"`` (trim up to
#: ``seq`` and record it as the page's ``acked``), ``"mirror"`` (the start
#: of a mirror, followed by the ``xadd`` of each message the owner keeps:
#: trim to the oldest message kept and record ``seq`` as ``acked``),
#: ``"gen"`` (a newer stream: bump the generation and wake the reader
#: ``data``) and ``"close"`` (delete the page's keys).
Write = tuple[str, "RedisOutbox", int, str]
#: Writes sent in one pipeline at most.
BATCH = 1000

#: Appends many messages, each to its page's stream (``KEYS``), in one
#: command. ``ARGV``: the number of distinct message texts, the texts, then
#: per key its entry id, its ``MINID`` and the (1-based) index of its text.
#: Each ``XADD`` is the one the writer would send alone (``NOMKSTREAM``: a
#: closed page's stream is never recreated; ``MINID``: see _oldest_kept)
#: and fails alone (``pcall``: an id already stored, after a batch sent
#: again). A broadcast reaching N pages costs the worker one command to
#: pack and one reply to parse, not N.
XADD_MANY = """
local texts = tonumber(ARGV[1])
local added = 0
for i = 1, #KEYS do
  local at = 1 + texts + 3 * (i - 1)
  local id = redis.pcall('XADD', KEYS[i], 'NOMKSTREAM', 'MINID', ARGV[at + 2],
                         ARGV[at + 1], 'd', ARGV[1 + tonumber(ARGV[at + 3])])
  if type(id) == 'string' then
    added = added + 1
  end
end
return added
"""


class StreamWriter(Loop):
    """Sends queued stream writes in order, pipelined; retries through outages.

    A batch that fails for another reason than the connection holds a bad
    write: the batch is sent again one write at a time, and the write that
    fails alone is logged once, dropped, and its page failed through
    ``fail_page`` (the page closes and its browser gets ``gone``: an explicit
    failure, never a gap in the page's stream).
    """

    name = "writer"

    def __init__(self, outboxes: dict[str, RedisOutbox], fail_page: Callable[[str], None]) -> None:
        super().__init__()
        self._outboxes = outboxes
        self._fail_page = fail_page
        self._queue: deque[Write] = deque()
        self._queued = Event()
        # Set (then replaced by a fresh one) when the queue has room again
        # after publishers found it full: every waiter wakes and checks.
        self._room = Event()
        # Writes queued and writes done (sent, or dropped as bad) so far:
        # sync() waits for the second to reach the first. Set (then None)
        # after each batch while a sync() waits.
        self._queued_count = 0
        self._done_count = 0
        self._synced: Event | None = None
        self._conn: Connection | None = None
        self._xadd_many: Any = None

    def attach(self, conn: Connection) -> None:
        """Use ``conn`` from now on; forget writes queued by another process."""
        self._conn = conn
        self._xadd_many = conn.client.register_script(XADD_MANY)
        self.clear()

    def clear(self) -> None:
        """Forget every queued write (after :meth:`drain`, at shutdown)."""
        self._queue.clear()
        self._done(self._queued_count - self._done_count)
        self._has_room()

    def sync(self, timeout: float) -> None:
        """Block until every write queued before this call was sent.

        At most ``timeout`` seconds, then :class:`BrokerUnavailable`. Used
        before another worker reads what was just queued (a mirror's start).
        Never waits in the writer's own greenlet or the hub.
        """
        target = self._queued_count
        if self._done_count >= target:
            return
        current = gevent.getcurrent()
        if current is self._greenlet or current is get_hub():
            raise BrokerUnavailable("Redis did not take the page's writes in time.")
        deadline = monotonic() + timeout
        while self._done_count < target:
            left = deadline - monotonic()
            if left <= 0:
                raise BrokerUnavailable("Redis did not take the page's writes in time.")
            if self._synced is None:
                self._synced = Event()
            self._synced.wait(left)

    def _done(self, count: int) -> None:
        """``count`` more writes were sent (or dropped): wake the syncs waiting."""
        self._done_count += count
        synced = self._synced
        if synced is not None:
            self._synced = None
            synced.set()

    def __len__(self) -> int:
        return len(self._queue)

    def check_room(self) -> None:
        """Return once the queue has room for a new message (bounded back-pressure).

        While ``MAX_QUEUED`` writes wait, the calling greenlet waits (at most
        ``ROOM_WAIT`` seconds) until the writer took a batch, then raises
        :class:`BrokerUnavailable` (Redis is not keeping up, or unreachable).
        A burst of broadcasts thus slows its publisher down instead of
        failing pages. Never waits in the writer's own greenlet or the hub
        (they raise at once: nothing else would make room). Returns with no
        yield after its last look at the queue: a caller that enqueues
        without yielding in between has the room.

        Only new messages wait (the outbox calls this before it takes a seq):
        closes, trims and generation bumps always queue, so closing a page
        never blocks or fails.
        """
        if len(self._queue) < MAX_QUEUED:
            return
        current = gevent.getcurrent()
        if current is self._greenlet or current is get_hub():
            raise BrokerUnavailable("Redis is not keeping up; message not sent.")
        deadline = monotonic() + ROOM_WAIT
        # Several greenlets may wait: each looks again when woken.
        while len(self._queue) >= MAX_QUEUED:
            left = deadline - monotonic()
            if left <= 0:
                raise BrokerUnavailable("Redis is not keeping up; message not sent.")
            self._room.wait(left)

    def _has_room(self) -> None:
        """Wake the publishers waiting for room, if there is room now."""
        if len(self._queue) < MAX_QUEUED:
            room, self._room = self._room, Event()
            room.set()

    def enqueue(self, item: Write) -> None:
        """Queue one write (never blocks; any greenlet)."""
        self._queue.append(item)
        self._queued_count += 1
        self._queued.set()

    def run(self) -> None:
        """The loop: write queued messages to their pages' streams, in order, pipelined."""
        while True:
            if not self._queue:
                self._queued.clear()
                self._queued.wait(IDLE_WAIT)
                continue
            batch = self._take_batch()
            try:
                self.write(batch)
            except Exception:  # not the connection: one write is bad
                for item in batch:
                    try:
                        self.write([item])
                    except Exception as exc:  # boundary: the writer serves everyone
                        self.item_failed(f"a write ({item[0]}) of a page", exc)
                        self._fail_page(item[1].page_id)
            finally:
                # Sent, dropped, or lost with a dying greenlet: a sync()
                # waits for no write that will never be sent.
                self._done(len(batch))

    def drain(self) -> None:
        """Send everything queued (at shutdown; the caller bounds the time)."""
        while self._queue:
            batch = self._take_batch()
            try:
                self.write(batch)
            finally:
                self._done(len(batch))

    def write(self, batch: list[Write]) -> None:
        """Send ``batch``, retrying through connection failures with backoff.

        Blocks the calling greenlet until sent; raises what is not the
        connection's fault. Replaying a batch is safe: an XADD of an id
        already stored fails alone (``raise_on_error=False``) and trims and
        deletes are idempotent.
        """
        assert self._conn is not None
        tries = 0
        while True:
            try:
                self._flush(batch)
                return
            except Exception as exc:
                if not self._conn.transient(exc):
                    raise
                tries += 1
                logger.warning("flask_athena: Redis write failed (%s); retrying", exc)
                self._conn.failed("write", exc)
                gevent.sleep(backoff(tries))

    def _take_batch(self) -> list[Write]:
        batch = [self._queue.popleft() for _ in range(min(len(self._queue), BATCH))]
        self._has_room()
        return batch

    def _flush(self, batch: list[Write]) -> None:
        assert self._conn is not None
        pipe = self._conn.client.pipeline(transaction=False)
        woken: dict[str, RedisOutbox] = {}
        # Consecutive messages go out as one XADD_MANY (in order: any other
        # write ends the run first); where its reply is in the pipeline's.
        run: list[tuple[RedisOutbox, int, str]] = []
        scripts: list[int] = []
        for op, outbox, seq, data in batch:
            pid = outbox.page_id
            if op == "xadd":
                run.append((outbox, seq, data))
                woken[pid] = outbox
                continue
            if run:
                self._append(pipe, run, scripts)
                run = []
            if op == "mirror":
                # What the owner's copy no longer keeps goes (acked, or
                # dropped by a bound while nobody mirrored); the messages it
                # keeps follow as xadds.
                pipe.xtrim(out_key(pid), minid=_oldest_kept(outbox), approximate=False)
                pipe.hset(page_key(pid), "acked", seq)
                pipe.expire(page_key(pid), PAGE_TTL)  # never a key without a TTL
            elif op == "ack":
                pipe.xtrim(out_key(pid), minid=f"{seq + 1}-0", approximate=False)
                # Read by a shared stream another worker serves (its ``last``
                # may be older than what the page's tab acknowledged).
                pipe.hset(page_key(pid), "acked", seq)
                pipe.expire(page_key(pid), PAGE_TTL)  # never a key without a TTL
            elif op == "gen":
                pipe.hincrby(page_key(pid), "gen", 1)
                pipe.expire(page_key(pid), PAGE_TTL)  # never a key without a TTL
                if data:
                    pipe.publish(wake_channel(data), json.dumps({"k": "wake", "p": pid}))
                woken[pid] = outbox
            else:  # close
                pipe.delete(page_key(pid), out_key(pid))
                woken[pid] = outbox
                if self._outboxes.get(pid) is outbox:
                    del self._outboxes[pid]
        if run:
            self._append(pipe, run, scripts)
        for pid, outbox in woken.items():
            if outbox.reader is not None:
                pipe.publish(wake_channel(outbox.reader), json.dumps({"k": "wake", "p": pid}))
        replies = pipe.execute(raise_on_error=False)
        for at in scripts:
            # The XADDs inside fail alone (and are dropped, as a lone XADD's
            # error is); the script failing as a whole lost them all: the
            # batch goes again one write at a time (see run()).
            if isinstance(replies[at], Exception):
                raise replies[at]

    def _append(self, pipe: Any, run: list[tuple[RedisOutbox, int, str]], at: list[int]) -> None:
        """Queue ``run`` (messages, in order) on ``pipe``: one XADD, or one XADD_MANY."""
        if len(run) == 1:
            outbox, seq, data = run[0]
            pipe.xadd(
                out_key(outbox.page_id),
                {"d": data},
                id=f"{seq}-0",
                minid=_oldest_kept(outbox),
                approximate=False,
                nomkstream=True,  # never recreate a deleted (closed) page
            )
            return
        texts: dict[str, int] = {}  # a broadcast's text is one object for every page
        keys: list[str] = []
        entries: list[str | int] = []
        for outbox, seq, data in run:
            index = texts.get(data)
            if index is None:
                index = texts[data] = len(texts) + 1
            keys.append(out_key(outbox.page_id))
            entries += (f"{seq}-0", _oldest_kept(outbox), index)
        at.append(len(pipe))
        self._xadd_many(keys=keys, args=[len(texts), *texts, *entries], client=pipe)


def _oldest_kept(outbox: RedisOutbox) -> str:
    """The ``MINID`` a message's ``XADD`` trims its page's stream to.

    The oldest message the owner's copy keeps: the same bounds (messages and
    bytes) and acks decided it, so both copies hold the same messages and a
    reader needing a dropped one gets ``gone`` on any worker. Read when the
    batch is sent, not at publish: later messages may have pushed it on
    since (then this one is trimmed at once, as the local copy dropped it).
    ``<first - 1>-1`` keeps ``<first>-0`` on and drops every entry before
    it, but keeps the placeholder ``0-1`` until a message is dropped or
    acked (as MAXLEN did).
    """
    return f"{outbox.first_seq - 1}-1"
