"""Issue 3, against a real server: the event stream and the calls endpoint.

The app runs under ``gunicorn -k gevent -w 1`` with a 0.2 s heartbeat and a
1 s page timeout; the stream is read raw with ``requests`` and parsed here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.servers import page_state, start_server
from tests.protocol_client import ProtocolClient
from tests.support import LiveServer, wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.2
PAGE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server("core", heartbeat=HEARTBEAT, page_timeout=PAGE_TIMEOUT)
    yield server
    server.stop()


@pytest.fixture
def page(server: LiveServer) -> Iterator[ProtocolClient]:
    """A freshly rendered page, driven synchronously (no lanes, no threads)."""
    client = ProtocolClient(server.url).open()
    yield client
    client.close()


def call(seq: int, widget: int, method: str, *args: object, **kwargs: object) -> dict[str, object]:
    return {
        "seq": seq,
        "type": "call",
        "widget": widget,
        "method": method,
        "args": list(args),
        "kwargs": kwargs,
    }


def test_stream_headers_retry_and_heartbeats(page: ProtocolClient) -> None:
    with page.stream() as stream:
        assert stream.response.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        assert "no-cache" in stream.headers["Cache-Control"]
        assert stream.headers["X-Accel-Buffering"] == "no"
        beats = []
        for _ in range(6):
            event = stream.next_event(timeout=3)
            assert event is not None
            beats.append(event)
        # The stream opens with its reconnect delay, before any event.
        assert bytes(stream.raw).startswith(b"retry: ")
        assert stream.parser.retry == 1000
    # An idle stream keeps getting heartbeats (each waited for with a
    # deadline of many ATHENA_HEARTBEAT periods; their pace is bench/'s).
    for event in beats:
        assert event.event == "heartbeat"
        assert event.id is None  # heartbeats never move Last-Event-ID
        assert event.json() == {}


def test_post_call_reaches_stream_as_numbered_messages_in_order(page: ProtocolClient) -> None:
    probe = page.widget("first")
    # Published before the stream exists: replayed from the outbox.
    status, body = page.post_raw({"messages": [call(1, probe, "publish", 5)]})
    assert (status, body) == (200, {"results": [{"seq": 1, "ok": 5}]})
    with page.stream() as stream:
        replayed = stream.events(5, timeout=5)
        # Published while the stream is open: delivered live, after them.
        status, body = page.post_raw({"messages": [call(2, probe, "publish", 5, start=5)]})
        assert (status, body) == (200, {"results": [{"seq": 2, "ok": 10}]})
        live = stream.events(5, timeout=5)
    events = replayed + live
    assert [e.id for e in events] == [str(n) for n in range(1, 11)]
    assert [e.event for e in events] == ["message"] * 10
    assert [e.json() for e in events] == [
        {"type": "call", "call": n + 1, "widget": probe, "method": "take", "args": [n]}
        for n in range(10)
    ]


def test_round_trip_result_comes_back_in_the_post_reply(page: ProtocolClient) -> None:
    probe = page.widget("second")
    status, body = page.post_raw(
        {
            "messages": [
                call(1, probe, "echo", "hi", [1, 2], flag=True),
                call(2, probe, "record", 7),
                call(3, probe, "record", 8),
            ]
        }
    )
    assert status == 200
    assert body == {
        "results": [
            {"seq": 1, "ok": {"args": ["hi", [1, 2]], "kwargs": {"flag": True}}},
            {"seq": 2, "ok": 1},
            {"seq": 3, "ok": 2},
        ]
    }


def test_raising_method_answers_remote_error_for_that_call_only(page: ProtocolClient) -> None:
    probe = page.widget("first")
    status, body = page.post_raw(
        {
            "messages": [
                call(1, probe, "tick"),
                call(2, probe, "fail", "nope"),
                call(3, probe, "tick"),
            ]
        }
    )
    assert status == 200  # remote-error is per call; the request succeeded
    first, failed, last = body["results"]
    assert first == {"seq": 1, "ok": 1}
    assert failed["seq"] == 2
    assert failed["error"]["code"] == "remote-error"
    assert failed["error"]["name"] == "RemoteError"
    assert "nope" not in failed["error"]["message"]  # no details unless app.debug
    assert last == {"seq": 3, "ok": 2}


def test_page_freed_after_page_timeout_without_stream(
    server: LiveServer, page: ProtocolClient
) -> None:
    with page.stream() as stream:
        assert stream.next_event(timeout=3) is not None
        wait_until(lambda: page_state(server.url, page.page_id)["stream_attached"], timeout=5)
    # The server notices the dead stream on its next heartbeat write, then
    # waits ATHENA_PAGE_TIMEOUT more: the page is seen open without a stream
    # before it is freed (not freed when its stream went).
    states: list[dict[str, Any]] = []

    def freed() -> bool:
        states.append(page_state(server.url, page.page_id))
        return not states[-1]["open"]

    wait_until(freed, timeout=10 * PAGE_TIMEOUT)
    assert any(s["open"] and not s["stream_attached"] for s in states), states[-5:]

    with page.stream(last_event_id=0) as stream:
        events = stream.until_end(timeout=5)
    assert [(e.event, e.json()) for e in events] == [("gone", {"reason": "unknown-page"})]
    status, body = page.post_raw({"messages": [call(1, page.widget("first"), "tick")]})
    assert status == 404
    assert body["error"]["code"] == "page-not-found"


def test_close_beacon_frees_page_at_once_and_ends_its_stream(
    server: LiveServer, page: ProtocolClient
) -> None:
    with page.stream() as stream:
        assert stream.next_event(timeout=3) is not None
        assert page.close_page() == 204
        # No waiting for a timeout: the page is gone as the beacon returns.
        assert page_state(server.url, page.page_id) == {"open": False}
        rest = [e for e in stream.until_end(timeout=5) if e.event != "heartbeat"]
    assert [(e.event, e.json()) for e in rest] == [("gone", {"reason": "closed"})]
    status, body = page.post_raw({"messages": [call(1, page.widget("first"), "tick")]})
    assert (status, body["error"]["code"]) == (404, "page-not-found")
    with page.stream() as stream:
        assert [e.event for e in stream.until_end(timeout=5)] == ["gone"]
    assert page.close_page() == 204  # closing twice is fine


def test_second_stream_replaces_the_first(server: LiveServer, page: ProtocolClient) -> None:
    probe = page.widget("first")
    with page.stream() as first:
        assert first.next_event(timeout=3) is not None
        with page.stream() as second:
            assert second.next_event(timeout=3) is not None
            # The first stream ends (no gone: the page lives on elsewhere).
            leftovers = first.until_end(timeout=5)
            assert first.ended
            assert all(e.event == "heartbeat" for e in leftovers)
            page.post_raw({"messages": [call(1, probe, "publish", 3)]})
            events = second.events(3, timeout=5)
    assert [e.id for e in events] == ["1", "2", "3"]
    assert page_state(server.url, page.page_id)["open"]
