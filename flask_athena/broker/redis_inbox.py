"""Forwarded requests: a worker asks the owner of a page to run something.

The asking side (:class:`Forwarder`) ``RPUSH``\\ es a request to the owner's
inbox list (``athena:inbox:<wid>``) and waits for the reply on its own
pub/sub channel; the owner's :class:`InboxServer` ``BLPOP``\\ s requests and
runs each in a greenlet of its own (at most ``MAX_FORWARDED`` at once).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from time import monotonic

import gevent
from gevent.event import Event
from gevent.pool import Pool

from ..errors import CallTimeout, PageNotFound
from . import Forwarded, Handler
from .loops import Loop, backoff
from .redis_common import (
    IDLE_WAIT,
    INBOX_TTL,
    MAX_FORWARDED,
    WORKER_BEAT,
    Connection,
    inbox_key,
    wake_channel,
)
from .redis_subscriber import Replies

logger = logging.getLogger("flask_athena")


class Forwarder:
    """Sends requests to other workers' inboxes and waits for their replies."""

    def __init__(self, replies: Replies, alive: Callable[[str], bool]) -> None:
        self._replies = replies
        self._alive = alive

    def forward(
        self, conn: Connection, owner: str, request: Forwarded, timeout: float
    ) -> Forwarded:
        """Run ``request`` on worker ``owner``; block this greenlet for its reply.

        Raises :class:`CallTimeout` (504, the browser retries with the same
        seqs, so nothing runs twice), :class:`PageNotFound` (the owner died)
        or redis-py's errors (the caller turns them into BrokerUnavailable).
        """
        rid = uuid.uuid4().hex
        result = self._replies.expect(rid)
        try:
            payload = json.dumps({"id": rid, "from": conn.wid, "req": request})
            pipe = conn.client.pipeline(transaction=False)
            pipe.rpush(inbox_key(owner), payload)
            pipe.expire(inbox_key(owner), INBOX_TTL)
            pipe.execute()
            deadline = monotonic() + timeout
            # Wait in slices: if the owner dies meanwhile, say so promptly
            # instead of holding the browser until the timeout.
            while True:
                result.wait(min(WORKER_BEAT, max(deadline - monotonic(), 0)))
                if result.ready():
                    break
                if monotonic() >= deadline:
                    raise CallTimeout("The worker that owns this page did not answer in time.")
                if not self._alive(owner):
                    raise PageNotFound("The worker that owned this page is gone.")
        finally:
            self._replies.forget(rid)
        reply: Forwarded = result.get(block=False)
        return reply


class InboxServer(Loop):
    """Takes requests forwarded to this worker; runs each in its own greenlet.

    A request that cannot be read is logged and dropped (its sender times
    out); one whose handler raises is answered ``500`` at once.
    """

    name = "inbox"

    def __init__(self, subscribed: Event) -> None:
        super().__init__()
        self._subscribed = subscribed
        #: Runs forwarded requests; set by the app state.
        self.handler: Handler | None = None
        self._pool = Pool(MAX_FORWARDED)
        self._conn: Connection | None = None

    def attach(self, conn: Connection) -> None:
        """Use ``conn`` from now on (a fresh pool: another process's is not ours)."""
        self._conn = conn
        self._pool = Pool(MAX_FORWARDED)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop taking requests, then kill the ones running (joined, bounded)."""
        stopped = super().stop(timeout)
        self._pool.kill(block=True, timeout=timeout)
        return stopped

    def run(self) -> None:
        """The loop: pop forwarded requests and run each in a greenlet of the pool (bounded)."""
        conn = self._conn
        assert conn is not None
        tries = 0
        while not self._subscribed.wait(IDLE_WAIT):
            pass  # requests are answered over pub/sub: subscribe first
        while True:
            try:
                item = conn.client.blpop([inbox_key(conn.wid)], timeout=1)
                tries = 0
            except Exception as exc:
                if not conn.transient(exc):
                    # An entry redis-py cannot decode: it is popped already,
                    # and its sender times out (504).
                    self.item_failed("a forwarded request", exc)
                    continue
                tries += 1
                logger.warning("flask_athena: Redis inbox failed (%s)", exc)
                conn.failed("inbox", exc)
                gevent.sleep(backoff(tries))
                continue
            if item is not None:
                # The pool bounds the requests run at once; spawn blocks
                # while it is full, and the rest wait in the inbox list.
                self._pool.spawn(self._serve, conn, item[1])

    def _serve(self, conn: Connection, payload: str) -> None:
        """Run one forwarded request and publish its reply (a pool greenlet)."""
        try:
            message = json.loads(payload)
            sender, rid, req = message["from"], message["id"], message["req"]
        except Exception as exc:  # boundary: nobody to answer, the sender times out
            self.item_failed("an unreadable forwarded request", exc)
            return
        handler = self.handler
        try:
            if handler is None:
                reply = _error_reply(503, "broker-unavailable", "The app is not ready.")
            else:
                reply = handler(req)
        except Exception as exc:  # boundary: one request must not end the inbox
            self.item_failed("a forwarded request", exc)
            # The sender learns at once instead of waiting for its timeout.
            reply = _error_reply(500, "internal-error", "Internal server error.")
        try:
            conn.client.publish(
                wake_channel(sender), json.dumps({"k": "reply", "r": rid, "v": reply})
            )
        except Exception as exc:  # boundary: the sender times out (504) and retries
            self.item_failed("the reply of a forwarded request", exc)


def _error_reply(status: int, code: str, message: str) -> Forwarded:
    """A reply in the handler's shape, with the JSON error body every endpoint sends."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return {"status": status, "body": body, "cookies": []}
