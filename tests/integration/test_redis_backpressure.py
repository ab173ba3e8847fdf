"""Bounded back-pressure of the Redis writer against a real ``redis-server``.

A burst of messages beyond the writer's queue (``MAX_QUEUED``, lowered here)
makes ``publish`` wait for room instead of raising: every message lands in
the page's stream once, in order. Redis gone for longer than the wait
(``ROOM_WAIT``, shortened here) makes ``publish`` raise
``BrokerUnavailable`` and the refused message takes no seq. Each scenario
runs in a gevent-patched process (``writer_scenarios``), as in a gunicorn
gevent worker. Also here, in the same harness: a page registered after Redis
lost its owner's liveness key (a restart) is not taken for a dead worker's,
and a subscriber connection redis-py reconnected by itself is noticed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.integration.redis_support import RedisServer, redis_server
from tests.support import ROOT

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module


def run(scenario: str, url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.writer_scenarios", scenario, url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_burst_beyond_the_writer_queue_waits_for_room_and_loses_nothing(
    redis_server: RedisServer,
) -> None:
    result = run("burst", redis_server.url)
    count = result["count"]
    assert result["errors"] == []
    assert result["published"] == list(range(1, count + 1))
    # Every message once, in order, after the page's placeholder.
    assert result["ids"] == ["0-1"] + [f"{n}-0" for n in range(1, count + 1)]
    assert [json.loads(d)["n"] for d in result["data"][1:]] == list(range(1, count + 1))


def test_redis_gone_longer_than_the_wait_for_room_refuses_new_messages() -> None:
    server = RedisServer().start()  # its own: the scenario shuts it down
    try:
        result = run("gone", server.url)
    finally:
        server.stop()
    assert result["refused"] == "broker-unavailable"
    # The queue filled up first (and the writer holds a batch it retries).
    assert result["accepted"] >= 50
    # The refused message took no seq.
    assert result["last_seq"] == result["accepted"]


def test_a_page_made_after_redis_lost_its_owners_key_is_found_elsewhere(
    redis_server: RedisServer,
) -> None:
    # A page whose owner has no liveness key is deleted by the first worker
    # that looks it up: a page made while the key was missing (Redis
    # restarted, the heartbeat not yet run) must not be.
    result = run("key_lost", redis_server.url)
    assert result["found"] == result["owner"]
    assert result["page"] == 1


def test_a_subscriber_connection_redis_py_makes_again_is_a_reconnect(
    redis_server: RedisServer,
) -> None:
    # redis-py reconnects a killed pub/sub connection by itself; the broker
    # must still do what it does after any outage (wake every stream it
    # serves, send broker_reconnected, which the metrics count).
    result = run("pubsub_killed", redis_server.url)
    assert result["killed"] >= 1  # the subscriber (and any an earlier scenario left)
    assert result["reconnected"] == 1
    assert result["reached"] is True
