"""Bounds: pages and streams per session, pending calls, the outbox, acks."""

from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from flask_athena.errors import TooManyPages, TooManyPending
from flask_athena.testing import AthenaClient

from .widgets import Recorder, element, first_chunk, state_of


def test_page_limit_evicts_the_oldest_idle_page(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_MAX_PAGES_PER_SESSION=3)
    client = AthenaClient(app)
    live_one, idle_one, idle_two = client.open(), client.open(), client.open()
    live_one.connect()
    evicted, kept = idle_one.live, idle_two.live
    fresh = client.open()
    assert evicted.closed and evicted.close_reason == "evicted"
    assert not kept.closed and not live_one.live.closed
    assert set(state_of(app).session_pages[fresh.live.session_key]) == {
        live_one.id,
        idle_two.id,
        fresh.id,
    }
    live_one.disconnect()


def test_page_limit_with_every_page_streaming_is_429(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_MAX_PAGES_PER_SESSION=2)
    client = AthenaClient(app)
    pages = [client.open(), client.open()]
    for page in pages:
        page.connect()
    response = client.flask.get("/")
    assert response.status_code == 429
    assert response.get_json() == {
        "error": {"code": "too-many-pages", "message": "Too many live pages for this session."}
    }
    assert all(not page.live.closed for page in pages)
    assert len(state_of(app).pages) == 2
    for page in pages:
        page.disconnect()


def test_regression_too_many_pages_in_a_view_was_a_500(make_app: Callable[..., Flask]) -> None:
    # athena.page() raises in the app's own view, where the blueprint's
    # error handlers did not apply: Flask answered 500 (HTML).
    app = make_app(lambda: [Recorder()], ATHENA_MAX_PAGES_PER_SESSION=1)
    client = AthenaClient(app)
    streaming = client.open()
    streaming.connect()
    response = client.flask.get("/")
    assert (response.status_code, response.mimetype) == (429, "application/json")
    streaming.disconnect()


def test_page_limit_is_per_session(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_MAX_PAGES_PER_SESSION=1)
    first, second = AthenaClient(app).open(), AthenaClient(app).open()
    first.connect()
    second.connect()
    assert len(state_of(app).pages) == 2
    first.disconnect()
    second.disconnect()


def test_open_page_raises_too_many_pages_when_all_stream(make_app: Callable[..., Flask]) -> None:
    app = make_app(ATHENA_MAX_PAGES_PER_SESSION=1)
    state = state_of(app)
    page = state.open_page("session-key")
    page.stream_attached = True
    with pytest.raises(TooManyPages) as info:
        state.open_page("session-key")
    assert (info.value.status_code, info.value.code) == (429, "too-many-pages")
    page.stream_attached = False


def test_stream_limit_is_429_too_many_streams(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_MAX_STREAMS_PER_SESSION=1)
    client = AthenaClient(app)
    first, second = client.open(), client.open()
    open_stream = client.flask.get(first.config["events"])
    try:
        next(iter(open_stream.response))
        refused = client.flask.get(second.config["events"])
        assert refused.status_code == 429
        assert refused.get_json()["error"]["code"] == "too-many-streams"
        assert not second.live.was_connected
        other_session = AthenaClient(app).open()  # another session has its own budget
        first_chunk(other_session.client.flask.get(other_session.config["events"]))
    finally:
        open_stream.close()
    first_chunk(client.flask.get(second.config["events"]))  # room again
    assert second.live.was_connected


def test_pending_calls_are_bounded(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_MAX_PENDING_CALLS=2)
    page = AthenaClient(app).open()
    recorder = element(page)
    tracked = [recorder.call_remote("ask", n) for n in range(2)]
    overflow = [recorder.call_remote("ask", n) for n in range(2, 5)]
    assert page.live.pending_calls == 2
    for call in overflow:
        assert call.ready()
        with pytest.raises(TooManyPending):
            call.get(timeout=0)
    messages = page.received()
    assert [m["args"] for m in messages] == [[0], [1], [2], [3], [4]]  # still delivered
    assert [m["call"] for m in messages[2:]] == [None, None, None]  # nobody waits
    page.answer(tracked[0].call_id, "ok")
    assert tracked[0].get(timeout=0) == "ok"
    assert page.live.pending_calls == 1
    recorder.call_remote("ask", "room again")
    assert page.live.pending_calls == 2


def test_outbox_keeps_at_most_its_size(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder()], ATHENA_OUTBOX_SIZE=3)).open()
    outbox = page.live.outbox
    for n in range(5):
        element(page).call_remote("hear", n)
        assert len(outbox) <= 3
    assert outbox.last_seq == 5
    assert outbox.read(0) is None  # messages 1 and 2 are gone: replay impossible
    assert outbox.read(1) is None
    frames = outbox.read(2)
    assert frames is not None and [f.split(b"\n")[0] for f in frames] == [
        b"id: 3",
        b"id: 4",
        b"id: 5",
    ]


def test_ack_in_a_post_trims_the_outbox(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder()])).open()
    for n in range(4):
        element(page).call_remote("hear", n)
    outbox = page.live.outbox
    assert page.send(ack=2) == (200, {"results": []})
    assert len(outbox) == 2
    assert outbox.read(1) is None
    assert outbox.read(2) is not None
    page.send(ack=1)  # an old ack changes nothing
    assert len(outbox) == 2
    page.send(ack=10**9)  # an ack past the end trims what there is, no more
    assert len(outbox) == 0 and outbox.last_seq == 4
    element(page).call_remote("hear", "after")
    assert [f.split(b"\n")[0] for f in outbox.read(4) or []] == [b"id: 5"]
