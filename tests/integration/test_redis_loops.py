"""Issue 13 in Redis mode: hostile input must not hurt anyone else.

No message can stop a loop that serves a whole worker; a forged
``Last-Event-ID`` cannot make a page's stream forget messages; a request
that fails a cheap check is refused where it arrived, before it costs the
page's owner anything.

``tests.apps.redis_app:app`` under ``gunicorn -k gevent -w 2`` sharing a real
``redis-server``. The broker's loops (writer, subscriber, poller, inbox,
heartbeat) serve every page of a worker: one poisoned message must be refused
on its own while every other page keeps getting its messages and heartbeats.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.integration.redis_support import (
    Page,
    RedisServer,
    Stream,
    connection_to,
    in_room,
    pages_on_workers,
    redis_server,
)
from tests.integration.test_redis_scaleout import SECRET
from tests.protocol_client import SSEParser
from tests.support import LiveServer, wait_until

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[LiveServer]:
    env = {
        "ATHENA_BROKER_URL": redis_server.url,
        "ATHENA_HEARTBEAT": "0.5",
        "ATHENA_PAGE_TIMEOUT": "60",
        "ATHENA_CALL_TIMEOUT": "5",
        "SECRET_KEY": SECRET,
    }
    server = LiveServer("tests.apps.redis_app:app", "redis-loops", workers=2, env=env)
    server.start()
    yield server
    server.stop()


def loops_of_every_worker(base: str, workers: int = 2) -> dict[int, list[dict[str, Any]]]:
    """``{pid: [loop health, ...]}`` of every worker (asked on fresh connections)."""
    seen: dict[int, list[dict[str, Any]]] = {}
    deadline = time.monotonic() + 20
    while len(seen) < workers:
        assert time.monotonic() < deadline, f"only reached workers {sorted(seen)}"
        with requests.Session() as session:
            body = session.get(base + "/loops", timeout=5).json()
        seen[body["pid"]] = body["loops"]
    return seen


def test_a_poisoned_message_stops_no_loop_other_pages_keep_messages_and_heartbeats(
    server: LiveServer,
) -> None:
    pages = pages_on_workers(server.url, owners=2)
    # Streams served by the worker that does NOT own the page: they read the
    # page's Redis stream, which only the owner's writer greenlet fills.
    streams = [Stream(page, avoid=page.owner) for page in pages]
    for stream in streams:
        stream.start()
    wait_until(lambda: all(s.served_by for s in streams), timeout=30)
    in_room(pages[0], streams)  # the owners ran connected(): every page joined the room
    pages[0].call("shout", "before")
    wait_until(lambda: all(len(s.heard()) == 1 for s in streams), timeout=30)

    # Poison on both workers: a broadcast holding a lone surrogate (every
    # worker delivers it) and a stream write Redis cannot encode (for a page
    # id holding one: it reaches the writer greenlet itself).
    owners = sorted({page.owner for page in pages})
    for owner in owners:
        next(p for p in pages if p.owner == owner).call("poison", want=owner)

    pages[-1].call("shout", "after")
    expected = ["before"] + ["\ufffd"] * len(owners) + ["after"]
    wait_until(lambda: all(len(s.heard()) == len(expected) for s in streams), timeout=30)
    beats = [s.heartbeats for s in streams]
    wait_until(lambda: all(s.heartbeats >= b + 3 for s, b in zip(streams, beats)), timeout=15)
    for stream in streams:
        # Once each, in order; the Stream reader asserts ids without gaps.
        # The lone surrogate arrives as U+FFFD (protocol.valid_text).
        assert [args[1] for args in stream.heard()] == expected
        assert stream.gone is None
    for pid, loops in loops_of_every_worker(server.url).items():
        assert {loop["name"] for loop in loops} == {
            "heartbeat",
            "subscriber",
            "inbox",
            "writer",
            "poller",
        }, pid
        for loop in loops:
            assert loop["alive"] and loop["restarts"] == 0, (pid, loop)
        # The unencodable write did reach the writer, which dropped it alone.
        (writer,) = [loop for loop in loops if loop["name"] == "writer"]
        assert writer["failed_items"] >= 1, (pid, writer)
    for page in pages:
        assert page.close() == 204
    for stream in streams:
        stream.join(timeout=5)
        assert stream.gone == "closed"


def _read_events(base: str, page: Page, last: int, avoid: int) -> tuple[list[int], str | None]:
    """Read a page's stream on a worker other than ``avoid`` until ``gone`` or quiet."""
    session, _ = connection_to(base, page.cookies, lambda pid: pid != avoid)
    ids: list[int] = []
    with session:
        response = session.get(
            base + page.config["events"],
            headers={"Last-Event-ID": str(last)},
            stream=True,
            timeout=(5, 5),
        )
        parser = SSEParser()
        for chunk in response.iter_content(None):
            for event in parser.feed(chunk):
                if event.event == "gone":
                    return ids, event.json()["reason"]
                if event.id is not None:
                    ids.append(int(event.id))
                if event.event == "heartbeat":  # caught up and idle
                    return ids, None
    return ids, None


def test_regression_non_owner_trimmed_redis_outbox_for_a_last_event_id_beyond_the_last(
    server: LiveServer, redis_server: RedisServer
) -> None:
    page = Page(server.url)
    for i in range(3):
        page.call("ping_back", f"p{i}")
    stream_key = f"athena:out:{page.id}"
    # A Last-Event-ID the page never sent: replay is impossible, say so...
    ids, gone = _read_events(server.url, page, 1000, avoid=page.owner)
    assert (ids, gone) == ([], "outbox-trimmed")
    # ...and forget nothing: the messages the attach copied to Redis (the
    # owner writes its copy there while another worker serves the stream)
    # are still there for a replay from 0.
    assert [e[0] for e in redis_server.client().xrange(stream_key)] == ["0-1", "1-0", "2-0", "3-0"]
    ids, gone = _read_events(server.url, page, 0, avoid=page.owner)
    assert (ids, gone) == ([1, 2, 3], None)
    assert page.close() == 204


def test_regression_non_owner_forwarded_requests_before_any_cheap_check(
    server: LiveServer, redis_server: RedisServer
) -> None:
    page = Page(server.url)
    good_headers = {
        "Content-Type": "application/json",
        "Origin": server.url,
        "X-Athena-Token": page.config["token"],
    }
    body = json.dumps({"messages": page.next_call("whoami")})

    def rpushes() -> int:
        stats = redis_server.client().info("commandstats")
        return int(stats.get("cmdstat_rpush", {}).get("calls", 0))

    def post(headers: dict[str, str], data: str | bytes, cookies: bool = True) -> requests.Response:
        session, _ = connection_to(
            server.url, page.cookies if cookies else None, lambda pid: pid != page.owner
        )
        with session:
            return session.post(
                server.url + page.config["calls"], data=data, headers=headers, timeout=30
            )

    before = rpushes()
    refused = [
        (post({**good_headers, "Origin": "http://evil.example"}, body), 403),
        (post({**good_headers, "Content-Type": "text/plain"}, body), 415),
        (post(good_headers, b"x" * (2 * 1024 * 1024)), 413),
        (post({**good_headers, "X-Athena-Token": "not a token!"}, body), 403),
        (post(good_headers, body, cookies=False), 403),  # no session at all
        (post(good_headers, '{"messages": "nope"}'), 400),
    ]
    for response, status in refused:
        assert response.status_code == status, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert "code" in response.json()["error"]
    # None of them reached Redis, let alone the owner.
    assert rpushes() == before
    # A good one is forwarded, answered by the owner, once.
    response = post(good_headers, body)
    assert response.status_code == 200, response.text
    assert response.json()["results"] == [{"seq": page.seq, "ok": page.owner}]
    assert rpushes() == before + 1
    assert page.close() == 204
