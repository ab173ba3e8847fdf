"""The event stream: replay after Last-Event-ID, live messages, gone, replacement."""

from __future__ import annotations

from typing import Any, Callable

import gevent
import pytest
from flask import Flask

from flask_athena import signals
from flask_athena.sse import SSEEvent, SSEParser, parse_events
from flask_athena.testing import AthenaClient, TestPage, collect_signal

from .widgets import Recorder, element, first_chunk


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()], ATHENA_OUTBOX_SIZE=4, ATHENA_HEARTBEAT=0.05)


@pytest.fixture
def page(app: Flask) -> TestPage:
    return AthenaClient(app).open()


def stream(page: TestPage, last: int | None = None, query: str = "") -> Any:
    headers = {} if last is None else {"Last-Event-ID": str(last)}
    return page.client.flask.get(page.config["events"] + query, headers=headers)


def ids(chunk: bytes) -> list[int]:
    return [int(event.id) for event in parse_events(chunk) if event.id is not None]


def test_unknown_page_answers_200_with_a_gone_event(app: Flask) -> None:
    response = app.test_client().get("/_athena/no-such-page/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    parser = SSEParser()
    events = parser.feed(response.data)
    assert parser.retry == 1000
    assert events == [SSEEvent("gone", '{"reason":"unknown-page"}')]


def test_closed_page_answers_gone(page: TestPage) -> None:
    page.close()
    response = stream(page)
    assert (response.status_code, response.mimetype) == (200, "text/event-stream")
    assert b"event: gone" in response.data


@pytest.mark.parametrize(
    ("header", "query"),
    [
        ("abc", ""),
        ("-1", ""),
        ("1.5", ""),
        (" 1", ""),
        ("9" * 19, ""),
        ("", "?last=x"),
        ("", "?last=-2"),
    ],
    ids=["text", "negative", "float", "space", "too-long", "query-text", "query-negative"],
)
def test_bad_last_event_id_is_400(page: TestPage, header: str, query: str) -> None:
    response = page.client.flask.get(
        page.config["events"] + query, headers={"Last-Event-ID": header} if header else {}
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad-request"
    assert not page.live.was_connected


@pytest.mark.parametrize(
    ("header", "query"),
    [("\u00b2", ""), ("", "?last=%C2%B2"), ("", "?last=%D9%A1")],
    ids=["superscript-header", "superscript-query", "arabic-indic-query"],
)
def test_regression_unicode_digit_last_event_id_was_a_500(
    page: TestPage, header: str, query: str
) -> None:
    # str.isdigit() admits "²" (and "١"), which int() refuses (or reads as 1).
    response = page.client.flask.get(
        page.config["events"] + query, headers={"Last-Event-ID": header} if header else {}
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad-request"


def test_stream_starts_with_retry_and_replays_after_last_event_id(page: TestPage) -> None:
    for n in range(3):
        element(page).call_remote("hear", n)
    chunk = first_chunk(stream(page, last=1))
    assert chunk.startswith(b"retry: 1000\n\n")
    assert ids(chunk) == [2, 3]
    assert len(page.live.outbox) == 2  # Last-Event-ID acknowledged message 1


def test_query_last_works_and_the_header_wins(page: TestPage) -> None:
    for n in range(3):
        element(page).call_remote("hear", n)
    assert ids(first_chunk(stream(page, query="?last=2"))) == [3]
    assert ids(first_chunk(stream(page, last=2, query="?last=0"))) == [3]


def test_stream_headers_prevent_buffering(page: TestPage) -> None:
    response = stream(page)
    first_chunk(response)
    assert response.headers["Cache-Control"] == "no-cache, no-transform"
    assert response.headers["X-Accel-Buffering"] == "no"


def test_live_message_follows_on_an_open_stream(page: TestPage) -> None:
    response = stream(page)
    try:
        body = iter(response.response)
        assert ids(next(body)) == []
        call = element(page).call_remote("hear", "live")
        [event] = parse_events(next(body))
        assert event.id == "1"
        assert f'"call":{call.call_id}' in event.data
    finally:
        response.close()


def test_idle_stream_sends_heartbeats(page: TestPage) -> None:
    response = stream(page)
    try:
        body = iter(response.response)
        next(body)
        assert parse_events(next(body)) == [SSEEvent("heartbeat", "{}")]
    finally:
        response.close()


def test_attaching_runs_connected_and_closing_the_response_disconnects(
    app: Flask, page: TestPage
) -> None:
    recorder = element(page)
    disconnected, stop = collect_signal(signals.page_disconnected, app)
    try:
        response = stream(page)
        first_chunk(response)
        assert recorder.log == [("r", "connected")]
        assert not page.live.stream_attached
        assert disconnected == [{"page": page.live}]
    finally:
        stop()


def test_newer_stream_replaces_the_older_one(make_app: Callable[..., Flask]) -> None:
    # A long heartbeat: the older stream must be woken, not time out.
    page = AthenaClient(make_app(lambda: [Recorder()], ATHENA_HEARTBEAT=60)).open()
    older = stream(page)
    newer = None
    older_body = iter(older.response)
    next(older_body)
    reader = gevent.spawn(list, older_body)
    try:
        gevent.idle()  # the older stream is now waiting for messages
        newer = stream(page)
        next(iter(newer.response))
        assert reader.get(timeout=5) == []  # it ended by itself, with nothing more
        assert page.live.stream_attached
    finally:
        reader.kill(block=True, timeout=1)
        older.close()
        if newer is not None:
            newer.close()
    assert not page.live.stream_attached


def test_page_closing_ends_the_stream_with_gone(page: TestPage) -> None:
    response = stream(page)
    try:
        body = iter(response.response)
        next(body)
        page.live.close("closed")
        assert parse_events(next(body)) == [SSEEvent("gone", '{"reason":"closed"}')]
        assert list(body) == []
    finally:
        response.close()


def test_last_event_id_ahead_of_the_outbox_is_gone(page: TestPage) -> None:
    element(page).call_remote("hear")
    response = stream(page, last=5)
    assert b'event: gone\ndata: {"reason":"outbox-trimmed"}' in response.data


def test_trimmed_outbox_is_gone_not_a_silent_gap(page: TestPage) -> None:
    for n in range(6):  # OUTBOX_SIZE is 4: messages 1 and 2 are dropped
        element(page).call_remote("hear", n)
    response = stream(page, last=0)
    assert b'"reason":"outbox-trimmed"' in response.data
    assert ids(first_chunk(stream(page, last=2))) == [3, 4, 5, 6]


def test_slow_reader_is_cut_off_with_gone(page: TestPage) -> None:
    response = stream(page)
    try:
        body = iter(response.response)
        next(body)
        for n in range(6):  # more than the outbox holds before the stream reads again
            page.live.outbox.publish(f'{{"n":{n}}}')
        assert parse_events(next(body)) == [SSEEvent("gone", '{"reason":"outbox-trimmed"}')]
    finally:
        response.close()
