"""The presence table in Redis: its keys, its scripts, one worker's writes.

:class:`PresenceStore` is what :class:`~.redis_presence.RedisPresence` (the
replica and its loops) asks of Redis: track and untrack one entry, reap a
dead worker's entries, bring Redis back to this worker's own entries
(:meth:`PresenceStore.reconcile`), keep their TTLs fresh, read one topic or
all. Every method blocks the calling greenlet for its round trips; each
write is one Lua script of :mod:`.redis_presence_lua` (atomic, and it
publishes the diff on the presence channel).
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from gevent.lock import BoundedSemaphore

from ..errors import BrokerUnavailable
from ..presence import new_ref
from ..protocol import dumps
from .redis_common import worker_key
from .redis_presence_lua import REAP, TRACK, UNTRACK, parse_topic_hash

if TYPE_CHECKING:
    from ..presence import Entries, Meta
    from .redis import RedisBroker

logger = logging.getLogger("flask_athena")

#: Seconds a presence key lives without a refresh by an owner of its entries.
PRESENCE_TTL = 60
#: Seconds a write waits for its turn with the reconciler.
WRITE_TURN = 10.0
#: Topics read in one pipeline.
READ_CHUNK = 500

#: ref -> (topic, entry) of every entry one worker owns.
Owned = dict[str, tuple[str, tuple[str, "Meta"]]]


class PresenceStore:
    """The presence keys of one app in Redis (``athena:pres:<ns>:...``)."""

    def __init__(self, broker: RedisBroker, namespace: str, max_members: int) -> None:
        self._broker = broker
        self._ns = namespace
        self._max_members = max_members
        self._prefix = f"athena:pres:{namespace}:t:"
        self._workers_key = f"athena:pres:{namespace}:workers"
        self._topics_key = f"athena:pres:{namespace}:topics"
        self._index_prefix = f"athena:pres:{namespace}:w:"
        #: The pub/sub channel of the diffs (set by :meth:`attach`).
        self.channel = ""
        #: This worker's id (set by :meth:`attach`).
        self.wid = ""
        self._scripts: dict[str, Any] = {}
        self._lock = BoundedSemaphore(1)

    def attach(self) -> None:
        """Take this process's client and worker id, load the scripts (after a
        fork). Blocks; raises :class:`BrokerUnavailable`."""
        client = self._broker.client()
        self.wid = self._broker.worker_id
        db = client.connection_pool.connection_kwargs.get("db", 0)
        # Pub/sub ignores database numbers: the channel names the database.
        self.channel = f"athena:pres:{db}:{self._ns}"
        self._scripts = {
            "track": client.register_script(TRACK),
            "untrack": client.register_script(UNTRACK),
            "reap": client.register_script(REAP),
        }

    def client(self) -> Any:
        """This worker's Redis client (raises :class:`BrokerUnavailable`)."""
        return self._broker.client()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Writes and the reconciler take turns, so a reconcile never re-adds
        an entry an untrack is removing (the wait is bounded)."""
        if not self._lock.acquire(timeout=WRITE_TURN):
            raise BrokerUnavailable("presence writes are stuck (Redis too slow?)")
        try:
            yield
        finally:
            self._lock.release()

    # -- one worker's writes -----------------------------------------------------

    def track(self, ref: str, entry: tuple[str, Meta], topic: str, old_ref: str) -> bool:
        """Add ``entry`` as ``ref`` to ``topic``, replacing ``old_ref`` ("": none).
        ``False`` when the topic is full. Call it inside :meth:`turn`."""
        status = self._run("track", topic, self._track_args(ref, entry, topic, old_ref))
        return bool(status[0] != -1)

    def untrack(self, ref: str, topic: str) -> None:
        """Remove entry ``ref`` from ``topic`` (nothing if absent); takes its turn."""
        with self.turn():
            self._run("untrack", topic, [ref, self.wid, topic, self.channel])

    def reap(self, wid: str) -> None:
        """Remove every entry of worker ``wid`` (one diff per topic)."""
        self._scripts["reap"](
            keys=[self._index_prefix + wid, self._workers_key, self._topics_key],
            args=[wid, self.channel, self._prefix],
        )

    def reap_dead(self) -> None:
        """Reap the entries of every other worker whose liveness key is gone."""
        client = self.client()
        workers = [w for w in client.smembers(self._workers_key) if w != self.wid]
        if not workers:
            return
        pipe = client.pipeline(transaction=False)
        for wid in workers:
            pipe.exists(worker_key(wid))
        for wid, alive in zip(workers, pipe.execute()):
            if not alive:
                logger.info("flask_athena: removing the presence of a dead worker")
                self.reap(wid)

    def reconcile(self, mine: Owned, full: bool) -> None:
        """Bring Redis back to ``mine`` (this worker's entries): re-add what it
        lost (a restart, an expired key, being taken for dead), remove what
        this worker no longer has (a leave that failed while Redis was away).
        Not ``full``: only when the counts disagree."""
        client = self.client()
        index_key = self._index_prefix + self.wid
        if not full:
            pipe = client.pipeline(transaction=False)
            pipe.hlen(index_key)
            pipe.sismember(self._workers_key, self.wid)
            count, listed = pipe.execute()
            if count == len(mine) and (listed or not mine):
                return
        with self.turn():
            index: dict[str, str] = client.hgetall(index_key)
            mine = dict(mine)
            pipe = client.pipeline(transaction=False)
            for ref, topic in index.items():
                if ref not in mine:
                    self._scripts["untrack"](
                        keys=self._keys(topic),
                        args=[ref, self.wid, topic, self.channel],
                        client=pipe,
                    )
            for ref, (topic, entry) in mine.items():
                # Idempotent: an entry still there is left alone.
                args = self._track_args(ref, entry, topic, "")
                self._scripts["track"](keys=self._keys(topic), args=args, client=pipe)
            pipe.execute()

    def refresh(self, topics: set[str]) -> None:
        """Extend the TTLs of ``topics`` and of this worker's index."""
        pipe = self.client().pipeline(transaction=False)
        for topic in topics:
            pipe.expire(self._prefix + topic, PRESENCE_TTL)
        for key in (self._index_prefix + self.wid, self._workers_key, self._topics_key):
            pipe.expire(key, PRESENCE_TTL)
        pipe.execute()

    # -- reads -------------------------------------------------------------------

    def read_topic(self, topic: str) -> tuple[tuple[str, int] | None, Entries]:
        """``(epoch and version, entries)`` of ``topic`` as Redis has it now."""
        return parse_topic_hash(self.client().hgetall(self._prefix + topic))

    def read_all(
        self, known: builtins.set[str]
    ) -> Iterator[tuple[str, tuple[str, int] | None, Entries]]:
        """Every topic with entries, and those of ``known``: ``(topic, version,
        entries)`` in topic order, read in pipelines of :data:`READ_CHUNK`."""
        client = self.client()
        topics = sorted(client.smembers(self._topics_key) | known)
        for start in range(0, len(topics), READ_CHUNK):
            chunk = topics[start : start + READ_CHUNK]
            pipe = client.pipeline(transaction=False)
            for topic in chunk:
                pipe.hgetall(self._prefix + topic)
            for topic, fields in zip(chunk, pipe.execute()):
                version, entries = parse_topic_hash(fields)
                yield topic, version, entries

    # -- helpers -----------------------------------------------------------------

    def _keys(self, topic: str) -> builtins.list[str]:
        return [
            self._prefix + topic,
            self._index_prefix + self.wid,
            self._workers_key,
            self._topics_key,
        ]

    def _track_args(
        self, ref: str, entry: tuple[str, Meta], topic: str, old_ref: str
    ) -> builtins.list[Any]:
        return [
            ref,
            dumps(entry),
            self.wid,
            topic,
            self.channel,
            self._max_members,
            PRESENCE_TTL,
            new_ref(),  # the topic's epoch, used only if this creates it
            old_ref,
        ]

    def _run(self, script: str, topic: str, args: builtins.list[Any]) -> Any:
        self.client()  # BrokerUnavailable while Redis is away
        try:
            return self._scripts[script](keys=self._keys(topic), args=args)
        except _redis_errors() as exc:
            raise BrokerUnavailable(f"Redis failed: {type(exc).__name__}") from exc


def _redis_errors() -> type[Exception]:
    import redis

    return redis.exceptions.RedisError
