"""The subscriber: a worker's one pub/sub connection.

It carries the app's broadcasts (``athena:bc:<db>:<app>``) and the worker's
own channel (``athena:w:<wid>``): wake-ups of the streams it serves for other
workers' pages (:class:`WakeUps`) and replies to the requests it forwarded
(:class:`Replies`). One connection per worker, never one per stream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

from .. import signals
from .loops import Loop, backoff
from .redis_common import WORKER_TTL, Connection, wake_channel, worker_key

logger = logging.getLogger("flask_athena")


class WakeUps:
    """The wake-up events of the streams this worker serves, by page id."""

    def __init__(self) -> None:
        self._events: dict[str, set[Event]] = {}

    def add(self, page_id: str, event: Event) -> None:
        """Set ``event`` whenever the page's stream has news (until :meth:`discard`)."""
        self._events.setdefault(page_id, set()).add(event)

    def discard(self, page_id: str, event: Event) -> None:
        """Stop setting ``event`` for the page (nothing if it was not added)."""
        events = self._events.get(page_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[page_id]

    def wake(self, page_id: str) -> None:
        """Set every event waiting on page ``page_id``. Never blocks."""
        for event in self._events.get(page_id, ()):
            event.set()

    def wake_all(self) -> None:
        """Wake every stream (after a reconnect: wake-ups may have been missed)."""
        for events in list(self._events.values()):
            for event in events:
                event.set()

    def clear(self) -> None:
        """Forget every registration (a new process after a fork)."""
        self._events.clear()


class Replies:
    """Replies awaited by requests this worker forwarded, by request id."""

    def __init__(self) -> None:
        self._waiting: dict[str, AsyncResult] = {}

    def expect(self, rid: str) -> AsyncResult:
        """An AsyncResult set when the reply of ``rid`` arrives (then :meth:`forget` it)."""
        result: AsyncResult = AsyncResult()
        self._waiting[rid] = result
        return result

    def forget(self, rid: str) -> None:
        """Stop waiting for the reply of ``rid`` (answered, or timed out)."""
        self._waiting.pop(rid, None)

    def resolve(self, rid: str, value: Any) -> None:
        """Hand ``value`` to the request waiting for ``rid`` (nothing if none waits)."""
        result = self._waiting.get(rid)
        if result is not None and not result.ready():
            result.set(value)


class Subscriber(Loop):
    """Holds the pub/sub connection; reconnects with backoff.

    ``deliver(topic, method, args_json)`` runs each broadcast for this
    worker's members (in this greenlet: it must not block). A message that
    cannot be handled is logged once and skipped.
    """

    name = "subscriber"

    def __init__(
        self, wakeups: WakeUps, replies: Replies, deliver: Callable[[str, str, str], object]
    ) -> None:
        super().__init__()
        self._wakeups = wakeups
        self._replies = replies
        self._deliver = deliver
        #: Set while subscribed (and the worker's liveness key is written).
        self.subscribed = Event()
        self._conn: Connection | None = None
        self._broadcast_channel = ""
        #: Set by redis-py's connect callback when it made the pub/sub connection again.
        self._redialed = False

    def attach(self, conn: Connection, broadcast_channel: str) -> None:
        """Use ``conn`` and this app's broadcast channel from now on."""
        self._conn = conn
        self._broadcast_channel = broadcast_channel
        self.subscribed.clear()

    def run(self) -> None:
        """The loop: hold the pub/sub connection, deliver broadcasts, wake-ups and replies."""
        conn = self._conn
        assert conn is not None
        tries = 0
        channels = (self._broadcast_channel, wake_channel(conn.wid))
        while True:
            pubsub = conn.client.pubsub()
            connection = None
            try:
                pubsub.subscribe(*channels)
                # redis-py reconnects a dropped pub/sub connection by itself
                # and subscribes again, without telling: hear of it here.
                connection = pubsub.connection
                self._redialed = False
                connection.register_connect_callback(self._note_redial)
                confirmed = 0
                while confirmed < len(channels):
                    message = pubsub.get_message(timeout=2.0)
                    if message is None:
                        raise conn.errors.TimeoutError("no SUBSCRIBE reply")
                    if message["type"] == "subscribe":
                        confirmed += 1
                self._back(conn, reconnected=tries > 0)
                tries = 0
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if self._redialed:
                        self._redialed = False
                        logger.warning("flask_athena: Redis subscriber reconnected by redis-py")
                        self._back(conn, reconnected=True)
                    if message is not None and message["type"] == "message":
                        self.dispatch(message["channel"], message["data"])
            except Exception as exc:  # the connection, or a reply redis-py cannot decode
                # Either way the connection is in doubt: reconnect (wake-ups
                # missed meanwhile are made up for once subscribed again).
                self.subscribed.clear()
                tries += 1
                logger.warning("flask_athena: Redis subscriber lost (%r); reconnecting", exc)
                conn.failed("subscribe", exc)
                gevent.sleep(backoff(tries))
            finally:
                try:
                    if connection is not None:  # it goes back to the client's pool
                        connection.deregister_connect_callback(self._note_redial)
                    pubsub.close()
                except Exception:  # closing a broken connection
                    pass

    def _note_redial(self, connection: Any) -> None:
        """redis-py's connect callback: the pub/sub connection was made again."""
        self._redialed = True

    def _back(self, conn: Connection, reconnected: bool) -> None:
        """Subscribed (again): this worker's liveness key, then the news."""
        # Our liveness key first, so no page is created by a worker other
        # workers would already call dead.
        conn.client.set(worker_key(conn.wid), "1", ex=WORKER_TTL)
        self.subscribed.set()
        if reconnected:
            signals.broker_reconnected.send(conn.app)
        self._wakeups.wake_all()  # wakes may have been missed while disconnected

    def dispatch(self, channel: str, data: str) -> None:
        """Handle one pub/sub message; a bad one is logged, counted and skipped."""
        try:
            message = json.loads(data)
            if channel == self._broadcast_channel:
                self._deliver(message["t"], message["m"], message["a"])
            elif message.get("k") == "wake":
                self._wakeups.wake(message["p"])
            elif message.get("k") == "reply":
                self._replies.resolve(message["r"], message["v"])
        except Exception as exc:  # boundary: one bad message must not end the subscriber
            self.item_failed("a pub/sub message", exc)
