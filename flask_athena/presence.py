"""Presence: who is in a topic, on every worker and host (DESIGN §8).

Phoenix Presence is the model. ``athena.presence.track(element, topic, key,
meta)`` records that ``element`` is in ``topic`` as ``key`` (a user name, an
account id); a user with two tabs is one key with two *metas*. Every change
reaches every element joined to the topic (:meth:`LiveElement.join`) as one
*diff* through the hook ``presence_changed(topic, joins, leaves)``, and
:meth:`Presence.list` gives the whole table. A join or leave costs one diff
per worker, delivered to each member: O(N) for a room of N, never a full
list per member.

Two backends share the delivery code below: :class:`LocalPresence` (the
in-process broker: the table lives here) and, with ``ATHENA_BROKER_URL``,
:class:`~flask_athena.broker.redis_presence.RedisPresence` (the table lives in
Redis, every worker keeps a replica fed by ordered diffs). The broker makes
the one that goes with it (:meth:`~flask_athena.broker.Broker.create_presence`).

Shapes (the same in Python and in ``athena/presence`` in the browser):

- a *meta* is the dict given to :meth:`Presence.track` plus ``"ref"``, a
  random id unique to that one tracking;
- a *presence table* (``list()``, ``joins``, ``leaves``) maps each key to the
  list of its metas, oldest first.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from flask import current_app, has_app_context

from . import signals
from .errors import PresenceFull, PresenceMetaTooLarge
from .protocol import JSONValue, call_message, dumps

if TYPE_CHECKING:
    from .element import LiveElement
    from .extension import Athena
    from .state import AthenaState

logger = logging.getLogger("flask_athena")

#: One tracking's details as lists show them (the app's meta plus ``"ref"``).
Meta = dict[str, JSONValue]
#: key -> its metas, oldest first: what ``list()`` returns and diffs carry.
Presences = dict[str, list[Meta]]
#: ref -> (key, meta): one topic's entries, in tracking order.
Entries = dict[str, tuple[str, Meta]]

#: The meta field holding the tracking's unique id.
REF = "ref"
#: Longest key accepted (characters).
MAX_KEY = 256


# -- sans-I/O core --------------------------------------------------------------


def new_ref() -> str:
    """A random tracking id (72 bits, URL-safe, never starts with ``#``)."""
    return "r" + secrets.token_urlsafe(9)


def make_entry(key: str, meta: object, ref: str, max_meta: int) -> tuple[str, Meta]:
    """Validate ``key`` and ``meta``; return the entry ``(key, meta + ref)``.

    Raises :class:`TypeError` for a key that is not a non-empty string or a
    meta that is not a JSON object, :class:`ValueError` for a meta using the
    reserved ``"ref"`` field, and :class:`PresenceMetaTooLarge` (413) when the
    key and meta serialize to more than ``max_meta`` bytes.
    """
    if not isinstance(key, str) or not key or len(key) > MAX_KEY:
        raise TypeError(f"a presence key is a non-empty string of at most {MAX_KEY} characters")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
        raise TypeError("a presence meta is a dict with string keys (a JSON object)")
    if REF in meta:
        raise ValueError(f"{REF!r} is set by flask_athena; use another name in the meta")
    full: Meta = {**meta, REF: ref}
    size = len(dumps([key, full]).encode())
    if size > max_meta:
        raise PresenceMetaTooLarge(
            f"presence key and meta take {size} bytes; ATHENA_PRESENCE_MAX_META is {max_meta}"
        )
    return key, full


def group(entries: Iterable[tuple[str, Meta]]) -> Presences:
    """Entries ``(key, meta)`` as a presence table (key -> metas, in order)."""
    table: Presences = {}
    for key, meta in entries:
        table.setdefault(key, []).append(meta)
    return table


def diff_entries(old: Entries, new: Entries) -> tuple[Entries, Entries]:
    """``(joins, leaves)`` that turn ``old`` into ``new`` (compared by ref)."""
    joins = {ref: entry for ref, entry in new.items() if ref not in old}
    leaves = {ref: entry for ref, entry in old.items() if ref not in new}
    return joins, leaves


def sync_diff(state: Presences, joins: Presences, leaves: Presences) -> Presences:
    """Apply a diff to a presence table; return the new table (``state`` is unchanged).

    A join adds the metas whose ref the key does not have yet; a leave
    removes metas by ref; a key left without metas is gone. Applying a diff
    twice, or a leave of something absent, changes nothing, so a snapshot
    and the diffs that overlap it combine safely. ``athena/presence``'s
    ``syncDiff`` in the browser does the same.
    """
    result = {key: list(metas) for key, metas in state.items()}
    for key, metas in joins.items():
        current = result.setdefault(key, [])
        refs = {m.get(REF) for m in current}
        current.extend(m for m in metas if m.get(REF) not in refs)
    for key, metas in leaves.items():
        if key not in result:
            continue
        gone = {m.get(REF) for m in metas}
        kept = [m for m in result[key] if m.get(REF) not in gone]
        if kept:
            result[key] = kept
        else:
            del result[key]
    return {key: metas for key, metas in result.items() if metas}


def sync_state(state: Presences, new_state: Presences) -> tuple[Presences, Presences]:
    """``(joins, leaves)`` from ``state`` to a newer snapshot ``new_state``."""
    joins: Presences = {}
    leaves: Presences = {}
    for key, metas in new_state.items():
        refs = {m.get(REF) for m in state.get(key, [])}
        added = [m for m in metas if m.get(REF) not in refs]
        if added:
            joins[key] = added
    for key, metas in state.items():
        refs = {m.get(REF) for m in new_state.get(key, [])}
        removed = [m for m in metas if m.get(REF) not in refs]
        if removed:
            leaves[key] = removed
    return joins, leaves


# -- delivery (both backends) -------------------------------------------------


class PresenceView:
    """This worker's view of presence, and the delivery of each diff to its
    elements: ``list()`` reads the view, so it agrees with the diffs delivered
    here so far.

    Not thread-safe; greenlets are cooperative and nothing here yields
    except the hooks it runs.
    """

    def __init__(self, state: AthenaState) -> None:
        self.state = state
        #: topic -> its entries as delivered here (no key for an empty topic).
        self.topics: dict[str, Entries] = {}

    def list(self, topic: str) -> Presences:
        """The presence table of ``topic`` as delivered here (a new dict)."""
        return group(self.topics.get(topic, {}).values())

    def refs(self, topic: str) -> Entries:
        """The entries of ``topic`` as delivered here (do not modify)."""
        return self.topics.get(topic, {})

    def deliver(self, topic: str, joins: Entries, leaves: Entries) -> None:
        """Apply one diff to the view, then tell the topic's elements and receivers.

        Joins of refs already present and leaves of absent ones are dropped,
        so every element sees each change once. Hooks run in the calling
        greenlet, in an app context; an exception in one is logged and the
        others still run.
        """
        entries = self.topics.get(topic, {})
        joins = {ref: entry for ref, entry in joins.items() if ref not in entries}
        leaves = {ref: entries[ref] for ref in leaves if ref in entries}
        if not joins and not leaves:
            return
        for ref in leaves:
            del entries[ref]
        entries.update(joins)
        if entries:
            self.topics[topic] = entries
        else:
            self.topics.pop(topic, None)
        self._notify(topic, group(joins.values()), group(leaves.values()))

    def replace(self, topic: str, entries: Entries) -> None:
        """Make ``topic`` hold ``entries`` (a resync), delivering the difference."""
        joins, leaves = diff_entries(self.topics.get(topic, {}), entries)
        self.deliver(topic, joins, leaves)

    def _notify(self, topic: str, joins: Presences, leaves: Presences) -> None:
        app = self.state.app
        if has_app_context() and current_app._get_current_object() is app:  # type: ignore[attr-defined]
            self._run_hooks(topic, joins, leaves)
        else:
            with app.app_context():
                self._run_hooks(topic, joins, leaves)

    def _run_hooks(self, topic: str, joins: Presences, leaves: Presences) -> None:
        relay_json: str | None = None
        # A hook may make an element leave (or close a page): iterate a copy.
        for element in self.state.topics.members(topic):
            page = element.page
            if page is None:
                continue
            try:
                if element.presence_relay and element.id is not None and not page.closed:
                    # Like a broadcast: serialized once, no answer expected,
                    # so a join costs each member one small frame.
                    if relay_json is None:
                        relay_json = dumps([joins, leaves, topic])
                    page.outbox.publish(
                        call_message(None, element.id, element.presence_relay, relay_json)
                    )
                element.presence_changed(topic, joins, leaves)
            except Exception:  # user code: log, the other members still hear
                logger.exception("presence_changed of %r raised", element)
        try:
            signals.presence_changed.send(self.state.app, topic=topic, joins=joins, leaves=leaves)
        except Exception:
            logger.exception("a presence-changed receiver raised")


# -- backends -----------------------------------------------------------------


class PresenceBackend(Protocol):
    """What :class:`Presence` needs from a backend (one per app per worker)."""

    def track(self, element: LiveElement, topic: str, key: str, meta: Meta | None) -> str:
        """Record ``element`` in ``topic`` as ``key``; return the entry's ref."""

    def untrack(self, element: LiveElement, topic: str) -> None:
        """Remove ``element``'s entry from ``topic`` (nothing if it has none)."""

    def forget(self, element: LiveElement) -> None:
        """The element left its page (detach or close): untrack it everywhere."""

    def list(self, topic: str) -> Presences:
        """``topic``'s table as delivered to this worker (a new dict)."""

    def start(self) -> None:
        """Called when this worker opens a page (Redis starts its greenlets)."""

    def close(self) -> None:
        """The app shuts down: drop this worker's entries, stop delivering."""


class LocalPresence:
    """Presence in one process (the in-process broker).

    Each change is applied to the table at once (the member limit is checked
    against it) and delivered synchronously: when ``track`` returns, every
    member's hook has run and ``list()`` includes the entry. A change made
    from inside a hook is delivered after the one being delivered, so every
    element sees changes in one order.
    """

    def __init__(self, state: AthenaState) -> None:
        self.state = state
        self.view = PresenceView(state)
        #: topic -> entries, changes applied at once (the view lags while a
        #: delivery is under way).
        self._topics: dict[str, Entries] = {}
        #: element -> topic -> ref of its entry.
        self._tracked: dict[LiveElement, dict[str, str]] = {}
        self._queue: deque[tuple[str, Entries, Entries]] = deque()
        self._delivering = False
        self._closed = False

    def track(self, element: LiveElement, topic: str, key: str, meta: Meta | None) -> str:
        """Record and deliver the join at once (see :meth:`Presence.track`)."""
        config = self.state.config
        ref = new_ref()
        entry = make_entry(key, meta, ref, config.presence_max_meta)
        entries = self._topics.get(topic, {})
        mine = self._tracked.get(element, {})
        old_ref = mine.get(topic)
        if old_ref is None and len(entries) >= config.presence_max_members:
            raise PresenceFull(
                f"the topic has ATHENA_PRESENCE_MAX_MEMBERS ({len(entries)}) entries"
            )
        leaves: Entries = {}
        if old_ref is not None:
            leaves[old_ref] = entries.pop(old_ref)
        entries[ref] = entry
        mine[topic] = ref
        self._topics[topic] = entries
        self._tracked[element] = mine
        self._change(topic, {ref: entry}, leaves)
        return ref

    def untrack(self, element: LiveElement, topic: str) -> None:
        """Remove and deliver the leave at once."""
        mine = self._tracked.get(element)
        ref = mine.pop(topic, None) if mine else None
        if mine is not None and not mine:
            del self._tracked[element]
        if ref is None:
            return
        entries = self._topics[topic]
        entry = entries.pop(ref)
        if not entries:
            del self._topics[topic]
        self._change(topic, {}, {ref: entry})

    def forget(self, element: LiveElement) -> None:
        """Untrack ``element`` in every topic (its page closed or it detached)."""
        for topic in list(self._tracked.get(element, ())):
            self.untrack(element, topic)

    def list(self, topic: str) -> Presences:
        """The table of ``topic`` as delivered so far."""
        return self.view.list(topic)

    def start(self) -> None:
        """Nothing to start: the table lives in this process."""

    def close(self) -> None:
        """Stop delivering (the app shuts down; its pages close next)."""
        # Shutting down: every page closes next; nobody is left to tell.
        self._closed = True
        self._queue.clear()

    def _change(self, topic: str, joins: Entries, leaves: Entries) -> None:
        if self._closed:
            self.view.topics.clear()
            return
        self._queue.append((topic, joins, leaves))
        if self._delivering:
            return  # a hook changed presence: delivered after the current diff
        self._delivering = True
        try:
            while self._queue:
                self.view.deliver(*self._queue.popleft())
        finally:
            self._delivering = False


# -- the public face ------------------------------------------------------------


class Presence:
    """``athena.presence``: track who is in a topic, on every worker.

    The table lives with the broker: in this process by default, in Redis
    with ``ATHENA_BROKER_URL`` (README "Presence" says what a reader may see
    and when).
    """

    def __init__(self, athena: Athena) -> None:
        self._athena = athena

    def track(self, element: LiveElement, topic: str, key: str, meta: Meta | None = None) -> str:
        """Record ``element`` in ``topic`` as ``key`` with ``meta``; return the entry's ref.

        ``meta`` is a JSON object (``"ref"`` is reserved) of at most
        ``ATHENA_PRESENCE_MAX_META`` bytes with its key
        (:class:`~flask_athena.errors.PresenceMetaTooLarge`, 413); a topic
        holds at most ``ATHENA_PRESENCE_MAX_MEMBERS`` entries
        (:class:`~flask_athena.errors.PresenceFull`, 429). Tracking an element
        already tracked in ``topic`` replaces its entry (one diff: a leave and
        a join). The entry lives until :meth:`untrack`, the element's detach,
        its page's close or, with Redis, its worker's death.

        When it returns, this worker has delivered the join (its elements'
        hooks ran and :meth:`list` includes it), unless it is called from a
        ``presence_changed`` hook: then the change is delivered after the
        current one. With Redis it blocks for a round trip and raises
        :class:`~flask_athena.errors.BrokerUnavailable` when Redis is
        unreachable.
        """
        page = element.page
        if page is None:
            raise RuntimeError("track() needs the element to be on a page")
        if not isinstance(topic, str) or not topic:
            raise TypeError("a presence topic is a non-empty string")
        return page.state.presence.track(element, topic, key, meta)

    def untrack(self, element: LiveElement, topic: str) -> None:
        """Remove ``element``'s entry from ``topic`` (nothing if it has none)."""
        page = element.page
        if page is not None:
            page.state.presence.untrack(element, topic)

    def list(self, topic: str) -> Presences:
        """Everyone in ``topic``: key -> the metas of every element tracking it,
        across every worker and host, as delivered to this worker so far.

        A new dict each call; never blocks.
        """
        return self._athena.state().presence.list(topic)
