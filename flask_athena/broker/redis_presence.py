"""Presence on the Redis broker: one table in Redis, a replica in every worker.

``docs/scale-out.rst`` ("Presence") is the design; in short, with
``<ns>`` = the app's import name and URL prefix:

- ``athena:pres:<ns>:t:<topic>`` (hash): ``ref -> [key, meta]`` for every
  entry, plus ``#e`` (the topic's epoch: random, made when the topic
  appears) and ``#v`` (its version: bumped by every change). Deleted when
  its last entry goes, so a topic that comes back starts a new epoch at 1.
- ``athena:pres:<ns>:w:<wid>`` (hash ``ref -> topic``): the entries a worker
  owns, so anyone can remove them when its liveness key expires;
  ``athena:pres:<ns>:workers`` and ``athena:pres:<ns>:topics`` (sets) list
  the workers with entries and the topics with entries.

Every change is one Lua script: it changes the hash, bumps the version and
``PUBLISH``\\ es the diff ``[topic, epoch, version, joins, leaves]`` on the
presence channel, atomically. Redis runs scripts one at a time and delivers
one channel's messages to every subscriber in publish order, so every worker
sees the changes of a topic in one order, numbered without gaps. A worker
that sees a gap (a message lost while its subscriber reconnected, a queue
overflow) or a new epoch re-reads the topic and delivers the difference.

Owners keep the authoritative record of their own entries in memory; a
maintenance greenlet re-asserts them when Redis lost them (a restart, an
expired key) and removes the entries of workers whose liveness key expired.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import random
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from gevent.event import Event
from gevent.lock import BoundedSemaphore

from ..errors import BrokerUnavailable, PresenceFull
from ..presence import Meta, Presences, PresenceView, make_entry, new_ref
from ..protocol import dumps
from .loops import Loop, backoff
from .redis_common import worker_key
from .redis_presence_lua import REAP, TRACK, UNTRACK, parse_pairs, parse_topic_hash, version_step

if TYPE_CHECKING:
    from ..element import LiveElement
    from ..state import AthenaState
    from .redis import RedisBroker

logger = logging.getLogger("flask_athena")

#: Seconds a presence key lives without a refresh by an owner of its entries.
PRESENCE_TTL = 60
#: Seconds between refreshes of those TTLs.
PRESENCE_REFRESH = 10.0
#: Seconds between checks for dead workers (their liveness key is gone
#: WORKER_TTL seconds after their last beat).
REAP_EVERY = 2.0
#: Seconds between full comparisons of this worker's entries with Redis'.
RECONCILE_EVERY = 30.0
#: Messages waiting for the applier; past this the worker re-reads everything.
MAX_QUEUED = 100_000
#: Seconds ``track``/``untrack`` wait for this worker to deliver their diff.
DELIVERY_WAIT = 3.0


class RedisPresence:
    """Presence through Redis (see the module docstring); one per app per worker."""

    def __init__(self, state: AthenaState, broker: RedisBroker) -> None:
        self.state = state
        self.broker = broker
        self.view = PresenceView(state)
        ns = f"{state.app.import_name}{state.config.url_prefix}"
        self._prefix = f"athena:pres:{ns}:t:"
        self._workers_key = f"athena:pres:{ns}:workers"
        self._topics_key = f"athena:pres:{ns}:topics"
        self._index_prefix = f"athena:pres:{ns}:w:"
        self._ns = ns
        self._channel = ""
        #: ref -> (topic, entry) of every entry this worker owns: the truth
        #: Redis is brought back to when it lost them.
        self._mine: dict[str, tuple[str, tuple[str, Meta]]] = {}
        #: element -> topic -> ref.
        self._tracked: dict[LiveElement, dict[str, str]] = {}
        #: topic -> (epoch, version) delivered here.
        self._versions: dict[str, tuple[str, int]] = {}
        self._queue: deque[tuple[str, str]] = deque()
        self._queued = Event()
        self._overflowed = False
        self._loaded = Event()
        self._reconcile_now = Event()
        #: (ref, topic, present wanted, event): track/untrack waiting for delivery here.
        self._waiters: list[tuple[str, str, bool, Event]] = []
        self._lock = BoundedSemaphore(1)
        self._pid: int | None = None
        self._wid = ""
        self._scripts: dict[str, Any] = {}
        #: Supervised (restarted with backoff if a body dies; stop() joins).
        self._loops = (
            Loop("presence-subscriber", self._listen_forever),
            Loop("presence-applier", self._apply_forever),
            Loop("presence-maintenance", self._maintain_forever),
        )
        #: The applier's greenlet: hooks run in it (track from a hook must not wait).
        self._applier: gevent.Greenlet | None = None
        self._closed = False

    # -- process start ---------------------------------------------------------

    def start(self) -> None:
        """Start this process's greenlets on first use (after gunicorn's fork)."""
        if self._pid == os.getpid() or self._closed:
            return
        client = self.broker.client()
        self._pid = os.getpid()
        self._wid = self.broker.worker_id
        db = client.connection_pool.connection_kwargs.get("db", 0)
        # Pub/sub ignores database numbers: the channel names the database.
        self._channel = f"athena:pres:{db}:{self._ns}"
        self._scripts = {
            "track": client.register_script(TRACK),
            "untrack": client.register_script(UNTRACK),
            "reap": client.register_script(REAP),
        }
        self._queue.clear()
        self._mine.clear()
        self._tracked.clear()
        self._versions.clear()
        self.view.topics.clear()
        self._loaded.clear()
        for loop in self._loops:
            loop.start()

    def close(self) -> None:
        """Stop the greenlets; remove this worker's entries (one diff per topic)."""
        self._closed = True
        for loop in self._loops:
            loop.stop()
        if self._pid == os.getpid() and self._mine:
            try:
                with gevent.Timeout(5, False):  # silent: the others reap us anyway
                    self._reap(self._wid)
            except Exception as exc:  # Redis gone at shutdown
                logger.warning("flask_athena: presence not removed at shutdown (%s)", exc)
        self._mine.clear()
        self._tracked.clear()
        self._pid = None

    # -- the backend API -------------------------------------------------------

    def track(self, element: LiveElement, topic: str, key: str, meta: Meta | None) -> str:
        self.start()
        ref = new_ref()
        entry = make_entry(key, meta, ref, self.state.config.presence_max_meta)
        mine = self._tracked.get(element, {})
        old_ref = mine.get(topic, "")
        with self._locked():
            status = self._run(
                "track",
                keys=self._keys(topic),
                args=[
                    ref,
                    dumps(entry),
                    self._wid,
                    topic,
                    self._channel,
                    self.state.config.presence_max_members,
                    PRESENCE_TTL,
                    new_ref(),
                    old_ref,
                ],
            )
            if status[0] == -1:
                raise PresenceFull(
                    f"the topic has ATHENA_PRESENCE_MAX_MEMBERS "
                    f"({self.state.config.presence_max_members}) entries"
                )
            self._mine.pop(old_ref, None)
            self._mine[ref] = (topic, entry)
            mine[topic] = ref
            self._tracked[element] = mine
        if element.page is None:
            # Detached (its page closed) during the round trip: forget() ran
            # before the entry was recorded, so remove it now, not never.
            self.forget(element)
            return ref
        self._wait_delivered(ref, topic, present=True)
        return ref

    def untrack(self, element: LiveElement, topic: str) -> None:
        ref = self._drop(element, topic)
        if ref is not None:
            self._untrack_in_redis(ref, topic)
            self._wait_delivered(ref, topic, present=False)

    def forget(self, element: LiveElement) -> None:
        if self._closed:
            return
        for topic in list(self._tracked.get(element, ())):
            ref = self._drop(element, topic)
            if ref is None:
                continue
            try:
                self._untrack_in_redis(ref, topic)
            except BrokerUnavailable as exc:
                # Closing a page never fails on Redis: the maintenance
                # greenlet removes the entry once Redis answers again.
                logger.warning("flask_athena: presence leave deferred (%s)", exc)

    def list(self, topic: str) -> Presences:
        self.start()
        if not self._loaded.is_set() and gevent.getcurrent() is not self._applier:
            self._loaded.wait(DELIVERY_WAIT)  # a worker's very first look
        return self.view.list(topic)

    # -- writes ----------------------------------------------------------------

    def _keys(self, topic: str) -> builtins.list[str]:
        return [
            self._prefix + topic,
            self._index_prefix + self._wid,
            self._workers_key,
            self._topics_key,
        ]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Writes and the reconciler take turns, so a reconcile never re-adds
        # an entry an untrack is removing (every wait has a timeout).
        if not self._lock.acquire(timeout=10):
            raise BrokerUnavailable("presence writes are stuck (Redis too slow?)")
        try:
            yield
        finally:
            self._lock.release()

    def _run(self, script: str, keys: builtins.list[str], args: builtins.list[Any]) -> Any:
        self.broker.client()  # BrokerUnavailable while Redis is away
        try:
            return self._scripts[script](keys=keys, args=args)
        except _redis_errors() as exc:
            raise BrokerUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    def _drop(self, element: LiveElement, topic: str) -> str | None:
        mine = self._tracked.get(element)
        ref = mine.pop(topic, None) if mine else None
        if mine is not None and not mine:
            del self._tracked[element]
        if ref is not None:
            self._mine.pop(ref, None)
        return ref

    def _untrack_in_redis(self, ref: str, topic: str) -> None:
        with self._locked():
            self._run(
                "untrack",
                keys=self._keys(topic),
                args=[ref, self._wid, topic, self._channel],
            )

    def _reap(self, wid: str) -> None:
        self._scripts["reap"](
            keys=[self._index_prefix + wid, self._workers_key, self._topics_key],
            args=[wid, self._channel, self._prefix],
        )

    def _wait_delivered(self, ref: str, topic: str, present: bool) -> None:
        """Block until this worker delivered the change of ``ref`` (bounded), so
        ``list()`` right after ``track()`` includes it, as with one worker."""
        if gevent.getcurrent() is self._applier:
            return  # a hook tracking: delivered after the current diff
        if (ref in self.view.refs(topic)) == present:
            return
        event = Event()
        waiter = (ref, topic, present, event)
        self._waiters.append(waiter)
        try:
            event.wait(DELIVERY_WAIT)
        finally:
            self._waiters.remove(waiter)

    # -- the subscriber and the applier ----------------------------------------

    def _listen_forever(self) -> None:
        """The presence channel's subscriber: messages go, in order, to the applier."""
        tries = 0
        while True:
            pubsub = None
            try:
                pubsub = self.broker.client().pubsub()
                pubsub.subscribe(self._channel)
                message = pubsub.get_message(timeout=2.0)
                if message is None or message["type"] != "subscribe":
                    raise BrokerUnavailable("no SUBSCRIBE reply")
                # Anything may have changed while nobody listened: re-read
                # everything, after the messages already queued.
                self._push("load", "")
                self._reconcile_now.set()
                tries = 0
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._push("diff", message["data"])
            except Exception as exc:  # Redis down or a bug: reconnect, never die
                tries += 1
                logger.warning("flask_athena: presence subscriber lost (%s); reconnecting", exc)
                gevent.sleep(backoff(tries))
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # closing a broken connection
                        pass

    def _push(self, kind: str, data: str) -> None:
        if len(self._queue) >= MAX_QUEUED:
            # Hooks too slow for the rate of changes: drop, and re-read
            # everything once the queue drains (diffs merge, nothing is lost).
            self._overflowed = True
            return
        self._queue.append((kind, data))
        self._queued.set()

    def _apply_forever(self) -> None:
        self._applier = gevent.getcurrent()
        tries = 0
        while True:
            if not self._queue:
                if self._overflowed:
                    self._overflowed = False
                    self._queue.append(("load", ""))
                    continue
                self._queued.clear()
                self._queued.wait()
                continue
            kind, data = self._queue.popleft()
            try:
                if kind == "load":
                    self._load()
                else:
                    self._apply(data)
                tries = 0
            except Exception as exc:  # Redis away, or a bug: delivery goes on
                tries += 1
                logger.warning("flask_athena: presence update failed (%s); re-reading", exc)
                gevent.sleep(backoff(tries))
                self._queue.appendleft(("load", ""))

    def _apply(self, data: str) -> None:
        try:
            topic, epoch, version, joins, leaves = json.loads(data)
            topic, epoch, version = str(topic), str(epoch), int(version)
            joins_, leaves_ = parse_pairs(joins), parse_pairs(leaves)
        except (ValueError, TypeError) as exc:
            logger.error("flask_athena: bad presence message dropped (%s)", exc)
            self._queue.append(("load", ""))
            return
        step = version_step(self._versions.get(topic), epoch, version)
        if step == "skip":
            return
        if step == "resync":
            self._resync(topic)
            return
        if step == "reset":
            self.view.replace(topic, joins_)
        else:
            self.view.deliver(topic, joins_, leaves_)
        self._set_version(topic, (epoch, version))
        self._wake(topic)

    def _set_version(self, topic: str, version: tuple[str, int] | None) -> None:
        if version is None or not self.view.refs(topic):
            self._versions.pop(topic, None)  # Redis deleted the emptied topic too
        else:
            self._versions[topic] = version

    def _resync(self, topic: str) -> None:
        client = self.broker.client()
        version, entries = parse_topic_hash(client.hgetall(self._prefix + topic))
        self.view.replace(topic, entries)
        self._set_version(topic, version)
        self._wake(topic)

    def _load(self) -> None:
        """Re-read every topic and deliver what changed (start, reconnect, overflow)."""
        client = self.broker.client()
        topics = sorted(client.smembers(self._topics_key) | set(self.view.topics))
        for start in range(0, len(topics), 500):
            chunk = topics[start : start + 500]
            pipe = client.pipeline(transaction=False)
            for topic in chunk:
                pipe.hgetall(self._prefix + topic)
            for topic, fields in zip(chunk, pipe.execute()):
                version, entries = parse_topic_hash(fields)
                self.view.replace(topic, entries)
                self._set_version(topic, version)
                self._wake(topic)
        self._loaded.set()

    def _wake(self, topic: str) -> None:
        if not self._waiters:
            return
        refs = self.view.refs(topic)
        for ref, waited_topic, present, event in self._waiters:
            if waited_topic == topic and (ref in refs) == present:
                event.set()

    # -- maintenance -----------------------------------------------------------

    def _maintain_forever(self) -> None:
        """Reap dead workers' entries; keep ours in Redis and their TTLs fresh."""
        last_refresh = last_reconcile = 0.0
        tries = 0
        while True:
            # Jitter: workers started together do not all ask at once.
            self._reconcile_now.wait(REAP_EVERY * random.uniform(0.75, 1.25))
            try:
                now = monotonic()
                self._reap_dead()
                if self._reconcile_now.is_set() or now - last_reconcile >= RECONCILE_EVERY:
                    self._reconcile_now.clear()
                    last_reconcile = now
                    self._reconcile(full=True)
                else:
                    self._reconcile(full=False)
                if now - last_refresh >= PRESENCE_REFRESH:
                    last_refresh = now
                    self._refresh()
                tries = 0
            except Exception as exc:  # Redis down: try again, never die
                tries += 1
                logger.warning("flask_athena: presence maintenance failed (%s)", exc)
                gevent.sleep(backoff(tries))

    def _reap_dead(self) -> None:
        client = self.broker.client()
        workers = [w for w in client.smembers(self._workers_key) if w != self._wid]
        if not workers:
            return
        pipe = client.pipeline(transaction=False)
        for wid in workers:
            pipe.exists(worker_key(wid))
        for wid, alive in zip(workers, pipe.execute()):
            if not alive:
                logger.info("flask_athena: removing the presence of a dead worker")
                self._reap(wid)

    def _reconcile(self, full: bool) -> None:
        """Bring Redis back to this worker's entries: re-add what it lost (a
        restart, an expired key, being taken for dead), remove what this
        worker no longer has (a leave that failed while Redis was away)."""
        client = self.broker.client()
        index_key = self._index_prefix + self._wid
        if not full:
            pipe = client.pipeline(transaction=False)
            pipe.hlen(index_key)
            pipe.sismember(self._workers_key, self._wid)
            count, listed = pipe.execute()
            if count == len(self._mine) and (listed or not self._mine):
                return
        with self._locked():
            index: dict[str, str] = client.hgetall(index_key)
            mine = dict(self._mine)
            pipe = client.pipeline(transaction=False)
            for ref, topic in index.items():
                if ref not in mine:
                    self._scripts["untrack"](
                        keys=self._keys(topic),
                        args=[ref, self._wid, topic, self._channel],
                        client=pipe,
                    )
            max_members = self.state.config.presence_max_members
            for ref, (topic, entry) in mine.items():
                # Idempotent: an entry still there is left alone.
                args: builtins.list[Any] = [ref, dumps(entry), self._wid, topic, self._channel]
                args += [max_members, PRESENCE_TTL, new_ref(), ""]
                self._scripts["track"](keys=self._keys(topic), args=args, client=pipe)
            pipe.execute()

    def _refresh(self) -> None:
        if not self._mine:
            return
        client = self.broker.client()
        pipe = client.pipeline(transaction=False)
        for topic in {topic for topic, _ in self._mine.values()}:
            pipe.expire(self._prefix + topic, PRESENCE_TTL)
        for key in (self._index_prefix + self._wid, self._workers_key, self._topics_key):
            pipe.expire(key, PRESENCE_TTL)
        pipe.execute()


def _redis_errors() -> type[Exception]:
    import redis

    return redis.exceptions.RedisError
