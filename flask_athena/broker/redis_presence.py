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
The keys and scripts are :class:`~.redis_presence_store.PresenceStore`'s;
this module keeps the replica, the greenlets that feed it, and the entries
this worker owns.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING

import gevent
from gevent.event import Event

from ..errors import BrokerUnavailable, PresenceFull
from ..presence import Entries, Meta, Presences, PresenceView, make_entry, new_ref
from .loops import Loop, backoff
from .redis_presence_lua import parse_pairs, version_step
from .redis_presence_store import Owned, PresenceStore

if TYPE_CHECKING:
    from ..element import LiveElement
    from ..state import AthenaState
    from .redis import RedisBroker

logger = logging.getLogger("flask_athena")

#: Seconds between refreshes of the TTLs of this worker's presence keys.
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
#: Seconds an idle loop waits before it looks again (every wait has a timeout).
IDLE_WAIT = 1.0


class RedisPresence:
    """Presence through Redis (see the module docstring); one per app per worker.

    ``track``, ``untrack`` and ``forget`` run in the caller's greenlet and
    block for Redis' round trip; hooks run in the applier loop's greenlet.
    """

    def __init__(self, state: AthenaState, broker: RedisBroker) -> None:
        self.state = state
        self.broker = broker
        self.view = PresenceView(state)
        config = state.config
        self.store = PresenceStore(
            broker, f"{state.app.import_name}{config.url_prefix}", config.presence_max_members
        )
        #: ref -> (topic, entry) of every entry this worker owns: the truth
        #: Redis is brought back to when it lost them.
        self._mine: Owned = {}
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
        self._pid: int | None = None
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
        """Start this process's greenlets on first use (after gunicorn's fork).

        Blocks for Redis' round trip the first time in a process; raises
        :class:`~flask_athena.errors.BrokerUnavailable`.
        """
        if self._pid == os.getpid() or self._closed:
            return
        self.store.attach()
        self._pid = os.getpid()
        self._queue.clear()
        self._mine.clear()
        self._tracked.clear()
        self._versions.clear()
        self.view.topics.clear()
        self._loaded.clear()
        for loop in self._loops:
            loop.start()

    def close(self) -> None:
        """Stop the greenlets (joined, bounded); remove this worker's entries
        (one diff per topic, best effort within 5 seconds)."""
        self._closed = True
        for loop in self._loops:
            if not loop.stop(timeout=2.0):
                logger.warning("flask_athena: the %s loop did not stop in time", loop.name)
        if self._pid == os.getpid() and self._mine:
            try:
                with gevent.Timeout(5, False):  # silent: the others reap us anyway
                    self.store.reap(self.store.wid)
            except Exception as exc:  # Redis gone at shutdown
                logger.warning("flask_athena: presence not removed at shutdown (%s)", exc)
        self._mine.clear()
        self._tracked.clear()
        self._pid = None

    # -- the backend API -------------------------------------------------------

    def track(self, element: LiveElement, topic: str, key: str, meta: Meta | None) -> str:
        """Record ``element`` in ``topic`` (see :meth:`Presence.track
        <flask_athena.presence.Presence.track>`); blocks until this worker
        delivered the join (bounded by :data:`DELIVERY_WAIT`)."""
        self.start()
        ref = new_ref()
        entry = make_entry(key, meta, ref, self.state.config.presence_max_meta)
        mine = self._tracked.get(element, {})
        old_ref = mine.get(topic, "")
        with self.store.turn():
            if not self.store.track(ref, entry, topic, old_ref):
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
        """Remove ``element``'s entry from ``topic``; blocks until delivered here (bounded)."""
        ref = self._drop(element, topic)
        if ref is not None:
            self.store.untrack(ref, topic)
            self._wait_delivered(ref, topic, present=False)

    def forget(self, element: LiveElement) -> None:
        """The element left its page: untrack it everywhere (a Redis outage
        defers the removal to the maintenance loop; never raises for it)."""
        if self._closed:
            return
        for topic in list(self._tracked.get(element, ())):
            ref = self._drop(element, topic)
            if ref is None:
                continue
            try:
                self.store.untrack(ref, topic)
            except BrokerUnavailable as exc:
                # Closing a page never fails on Redis: the maintenance
                # greenlet removes the entry once Redis answers again.
                logger.warning("flask_athena: presence leave deferred (%s)", exc)

    def list(self, topic: str) -> Presences:
        """The topic as delivered here; a worker's very first look waits for
        its first load (bounded by :data:`DELIVERY_WAIT`)."""
        self.start()
        if not self._loaded.is_set() and gevent.getcurrent() is not self._applier:
            self._loaded.wait(DELIVERY_WAIT)
        return self.view.list(topic)

    # -- this worker's entries ---------------------------------------------------

    def _drop(self, element: LiveElement, topic: str) -> str | None:
        mine = self._tracked.get(element)
        ref = mine.pop(topic, None) if mine else None
        if mine is not None and not mine:
            del self._tracked[element]
        if ref is not None:
            self._mine.pop(ref, None)
        return ref

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
                pubsub = self.store.client().pubsub()
                pubsub.subscribe(self.store.channel)
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
                self._queued.wait(IDLE_WAIT)
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
            version_read, entries = self.store.read_topic(topic)
            self._replace(topic, version_read, entries)
            return
        if step == "reset":
            self.view.replace(topic, joins_)
        else:
            self.view.deliver(topic, joins_, leaves_)
        self._set_version(topic, (epoch, version))
        self._wake(topic)

    def _replace(self, topic: str, version: tuple[str, int] | None, entries: Entries) -> None:
        self.view.replace(topic, entries)
        self._set_version(topic, version)
        self._wake(topic)

    def _set_version(self, topic: str, version: tuple[str, int] | None) -> None:
        if version is None or not self.view.refs(topic):
            self._versions.pop(topic, None)  # Redis deleted the emptied topic too
        else:
            self._versions[topic] = version

    def _load(self) -> None:
        """Re-read every topic and deliver what changed (start, reconnect, overflow)."""
        for topic, version, entries in self.store.read_all(set(self.view.topics)):
            self._replace(topic, version, entries)
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
                self.store.reap_dead()
                full = self._reconcile_now.is_set() or now - last_reconcile >= RECONCILE_EVERY
                if full:
                    self._reconcile_now.clear()
                    last_reconcile = now
                self.store.reconcile(self._mine, full)
                if now - last_refresh >= PRESENCE_REFRESH:
                    last_refresh = now
                    if self._mine:
                        self.store.refresh({topic for topic, _ in self._mine.values()})
                tries = 0
            except Exception as exc:  # Redis down: try again, never die
                tries += 1
                logger.warning("flask_athena: presence maintenance failed (%s)", exc)
                gevent.sleep(backoff(tries))
