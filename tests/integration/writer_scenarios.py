"""Scenarios of the Redis writer (and of page registration and the
subscriber) run in a process of their own, gevent-patched as a gunicorn
gevent worker is (the writer must block on its socket while other greenlets
publish): ``python -m tests.integration.writer_scenarios NAME REDIS_URL``.
Prints one JSON line: what the test asserts on.

Used by ``test_redis_backpressure.py``; every wait here has a deadline.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import redis  # noqa: E402

from flask_athena import signals  # noqa: E402
from flask_athena.broker import redis_writer  # noqa: E402
from flask_athena.broker.redis import RedisBroker  # noqa: E402
from flask_athena.broker.redis_common import out_key, page_key, worker_key  # noqa: E402
from flask_athena.errors import BrokerUnavailable  # noqa: E402

#: The writer's queue bound for these scenarios (the real one is 100,000).
BOUND = 50


def _open_page(broker: RedisBroker, page_id: str) -> Any:
    outbox = broker.create_outbox(page_id, 10_000)
    broker.register_page(page_id, outbox)
    # Served by another worker: every message is written to Redis.
    outbox.served_by("another-worker")
    return outbox


def _wait(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def burst(url: str) -> dict[str, Any]:
    """Redis paused while a greenlet publishes 6x the queue's bound."""
    redis_writer.MAX_QUEUED = BOUND  # the constant the writer reads
    broker = RedisBroker(url, call_timeout=5)
    outbox = _open_page(broker, "burst")
    count = 6 * BOUND
    other = redis.Redis.from_url(url, decode_responses=True)
    # Hold the writer back: its pipelines wait while Redis pauses writers.
    other.execute_command("CLIENT", "PAUSE", "1500", "WRITE")
    published: list[int] = []

    def publisher() -> None:
        for n in range(1, count + 1):
            published.append(outbox.publish(json.dumps({"n": n})))

    errors: list[str] = []
    job = gevent.spawn(publisher)
    job.join(timeout=60)
    if not job.successful():
        errors.append(repr(job.exception) if job.dead else "publisher still running")
    key = out_key("burst")
    _wait(lambda: other.xlen(key) >= count + 1, 30)
    entries = other.xrange(key)
    broker.close()
    return {
        "errors": errors,
        "published": published,
        "ids": [entry_id for entry_id, _ in entries],
        "data": [fields["d"] for _, fields in entries],
        "count": count,
    }


def gone(url: str) -> dict[str, Any]:
    """Redis shut down for longer than the wait for room: publish refuses."""
    redis_writer.MAX_QUEUED = BOUND
    redis_writer.ROOM_WAIT = 2.0  # the bound under test, shortened
    broker = RedisBroker(url, call_timeout=5)
    outbox = _open_page(broker, "gone")
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    accepted = 0
    refused = ""
    for n in range(1, 10 * BOUND):
        try:
            outbox.publish(json.dumps({"n": n}))
        except BrokerUnavailable as exc:
            refused = exc.code
            break
        accepted += 1
    return {"accepted": accepted, "refused": refused, "last_seq": outbox.last_seq}


def key_lost(url: str) -> dict[str, Any]:
    """Redis lost this worker's liveness key (a restart) before it beat
    again; a page made now is found by another worker's ``locate``."""
    owner = RedisBroker(url, call_timeout=5)
    other = RedisBroker(url, call_timeout=5)
    owner.register_page("before", owner.create_outbox("before", 100))
    client = redis.Redis.from_url(url, decode_responses=True)
    client.delete(worker_key(owner.worker_id))  # what a restart does to it
    # The heartbeat beats once a second: the rest takes milliseconds.
    owner.register_page("after", owner.create_outbox("after", 100))
    found = other.locate("after")
    result = {"owner": owner.worker_id, "found": found, "page": client.exists(page_key("after"))}
    owner.close()
    other.close()
    return result


def pubsub_killed(url: str) -> dict[str, Any]:
    """Redis drops the subscriber's connection (``CLIENT KILL TYPE pubsub``,
    what a network blip or a proxy's idle cut does) and redis-py reconnects
    it by itself: the broker must still notice, as after any outage."""
    broker = RedisBroker(url, call_timeout=5)
    reconnected: list[object] = []

    def count(sender: object) -> None:
        reconnected.append(sender)

    signals.broker_reconnected.connect(count, weak=False)
    client = broker.client()  # started and subscribed
    killed = client.client_kill_filter(_type="pubsub")
    _wait(lambda: bool(reconnected), 10)
    # Broadcasts reach this worker's subscriber again.
    reached = _wait(lambda: broker.broadcast("nobody", "hear", "[]") == 1, 10)
    broker.close()
    return {"killed": killed, "reconnected": len(reconnected), "reached": reached}


if __name__ == "__main__":
    scenario = {
        "burst": burst,
        "gone": gone,
        "key_lost": key_lost,
        "pubsub_killed": pubsub_killed,
    }[sys.argv[1]]
    print(json.dumps(scenario(sys.argv[2])), flush=True)
    sys.stdout.flush()
    # The broker's loops may still retry a vanished Redis: do not wait for them.
    import os

    os._exit(0)
