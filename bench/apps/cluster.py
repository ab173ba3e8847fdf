"""The multi-worker driver: run a control command on every worker sharing one Redis.

With several gunicorn workers a control request (``/bench/s2c``,
``/bench/push_to``, ``/bench/stats``) lands on one worker, but the pages it
must act on are spread over all of them: each page lives in the worker that
rendered it (its owner, docs/scale-out.rst). So the worker that takes the
request *publishes* the command on a Redis pub/sub channel that every worker
of the app listens to (one subscriber connection per worker, its own, not
flask_athena's), each worker runs it on the pages it owns, and ``RPUSH``\\ es
its answer on a reply list that the first worker reads with ``BLPOP`` until
it has one answer per worker. ``PUBLISH`` returns how many subscribers got
the command, so the first worker knows how many answers to wait for.

Broadcasts (``/bench/push``, ``/bench/sustain``) need none of this:
``athena.broadcast`` already reaches every worker through Redis.

Benchmark harness only: the private ``redis-server`` the suite starts, on
127.0.0.1; every wait has a deadline and reply lists expire.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from time import monotonic
from typing import Any

import gevent
from gevent.event import Event

logger = logging.getLogger("bench")

CHANNEL = "athena-bench:control"
REPLIES = "athena-bench:reply:"
#: Seconds a reply list may outlive a command nobody waits for any more.
REPLY_TTL = 120

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class Cluster:
    """Runs ``handlers[op](args)`` on every worker and collects the answers."""

    def __init__(
        self,
        url: str,
        handlers: dict[str, Handler],
        context: Callable[[], AbstractContextManager[Any]],
    ) -> None:
        self.url = url
        self.handlers = handlers
        self.context = context
        self._pid: int | None = None
        self._client: Any = None
        self._listener: gevent.Greenlet | None = None
        self._subscribed = Event()

    def start(self) -> None:
        """Connect and subscribe, once per process (after gunicorn's fork).

        Called before every request of the app (cheap after the first), so
        every worker that holds a page is listening.
        """
        if self._pid == os.getpid():
            return
        import redis  # in the worker, after gevent patched the standard library

        self._pid = os.getpid()
        self._client = redis.Redis.from_url(
            self.url, decode_responses=True, socket_connect_timeout=2
        )
        self._subscribed = Event()
        self._listener = gevent.spawn(self._listen_forever)

    def _listen_forever(self) -> None:
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(CHANNEL)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._subscribed.set()
                    elif message["type"] == "message":
                        gevent.spawn(self._run, message["data"])
            except Exception:  # Redis went away: the suite will see missing answers
                self._subscribed.clear()
                logger.exception("bench control: subscriber failed; reconnecting")
                gevent.sleep(0.5)
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection
                    pass

    def _run(self, data: str) -> None:
        command = json.loads(data)
        try:
            with self.context():
                reply = self.handlers[command["op"]](command["args"])
        except Exception as exc:  # reported to the caller, which fails the figure
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        reply["pid"] = os.getpid()
        key = REPLIES + command["id"]
        pipe = self._client.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(reply))
        pipe.expire(key, REPLY_TTL)
        pipe.execute()

    def gather(self, op: str, args: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """Run ``op`` on every worker (this one included); one answer per worker."""
        self.start()
        if not self._subscribed.wait(5.0):
            raise RuntimeError("bench control: not subscribed to Redis")
        rid = uuid.uuid4().hex
        key = REPLIES + rid
        workers = int(
            self._client.publish(CHANNEL, json.dumps({"id": rid, "op": op, "args": args}))
        )
        replies: list[dict[str, Any]] = []
        deadline = monotonic() + timeout
        try:
            while len(replies) < workers:
                if monotonic() > deadline:
                    raise RuntimeError(
                        f"bench control {op}: {len(replies)} of {workers} workers answered "
                        f"in {timeout:.0f} s"
                    )
                item = self._client.blpop([key], timeout=1)
                if item is not None:
                    replies.append(json.loads(item[1]))
        finally:
            self._client.delete(key)
        failed = [r["error"] for r in replies if "error" in r]
        if failed:
            raise RuntimeError(f"bench control {op} failed on a worker: {failed[0]}")
        return replies


def apportion(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` in proportion to ``weights`` (largest remainders)."""
    whole = sum(weights)
    if whole <= 0 or total <= 0:
        return [0] * len(weights)
    exact = [total * w / whole for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
