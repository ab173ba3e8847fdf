"""Slow consumers: a stream blocked in a write is cut, deterministically, no sockets.

A greenlet plays the WSGI server: it takes each chunk of the event stream and
"writes" it by waiting on an event nobody sets (a browser that stops
reading), and closes the body whatever happens, as gunicorn does.
"""

from __future__ import annotations

from time import monotonic
from typing import Any, Callable

import gevent
import pytest
from flask import Flask
from gevent.event import Event

from flask_athena import signals
from flask_athena.sse import parse_events
from flask_athena.stream import StreamCut
from flask_athena.testing import AthenaClient, TestPage, collect_signal

from .widgets import Recorder, element

OUTBOX_SIZE = 10
HEARTBEAT = 0.5


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        lambda: [Recorder()], ATHENA_OUTBOX_SIZE=OUTBOX_SIZE, ATHENA_HEARTBEAT=HEARTBEAT
    )


@pytest.fixture
def page(app: Flask) -> TestPage:
    return AthenaClient(app).open()


class StuckServer:
    """Serves one event stream of ``page`` to a peer that reads nothing."""

    def __init__(self, page: TestPage) -> None:
        self.never = Event()
        self.greenlet = gevent.spawn(self._serve, page)
        gevent.sleep(0)  # the first chunk (the replay) is handed over: now "writing"

    def _serve(self, page: TestPage) -> None:
        # The request runs in this greenlet, like a server's connection greenlet.
        response = page.client.flask.get(page.config["events"])
        try:
            for _chunk in response.response:
                self.never.wait()  # the write blocks: the peer does not read
        finally:
            response.close()

    def outcome(self) -> Any:
        self.greenlet.join(timeout=2)
        assert self.greenlet.dead
        return self.greenlet.exception


def publish(page: TestPage, count: int) -> None:
    for n in range(count):
        element(page).call_remote("hear", n)


def test_cut_once_more_than_half_the_outbox_is_behind_a_blocked_write(
    app: Flask, page: TestPage
) -> None:
    cuts, stop = collect_signal(signals.stream_cut, app)
    try:
        server = StuckServer(page)
        publish(page, OUTBOX_SIZE // 2)  # at the bound, not past it
        gevent.sleep(0.01)
        assert not server.greenlet.dead
        publish(page, 1)
        exception = server.outcome()
    finally:
        stop()
    assert isinstance(exception, StreamCut) and isinstance(exception, ConnectionResetError)
    assert [(c["page"], c["reason"]) for c in cuts] == [(page.live, "too far behind")]
    live = page.live
    assert (live.stream, live.stream_attached) == (None, False)
    assert not live.state.streams and not live.state.session_streams
    assert len(live.outbox) == OUTBOX_SIZE // 2 + 1  # kept for the replay


def test_the_reaper_cuts_a_write_blocked_past_two_heartbeats(page: TestPage) -> None:
    server = StuckServer(page)
    state = page.live.state
    state.reap(monotonic() + HEARTBEAT)  # blocked for one heartbeat: patience
    gevent.sleep(0.01)
    assert not server.greenlet.dead
    state.reap(monotonic() + 2 * HEARTBEAT + 0.1)
    assert isinstance(server.outcome(), StreamCut)
    assert not page.live.stream_attached


def test_a_stream_that_keeps_up_is_never_cut(page: TestPage) -> None:
    chunks: list[bytes] = []

    def serve() -> None:  # a peer that reads everything at once
        response = page.client.flask.get(page.config["events"])
        try:
            for chunk in response.response:
                chunks.append(chunk)
        finally:
            response.close()

    server = gevent.spawn(serve)
    try:
        gevent.sleep(0.01)  # the stream now waits for messages, it does not write
        page.live.state.reap(monotonic() + 60 * HEARTBEAT)
        publish(page, OUTBOX_SIZE - 1)  # a backlog past half the outbox, all written
        gevent.sleep(0.01)
        assert page.live.stream_attached and not server.dead
        ids = [int(e.id) for e in parse_events(b"".join(chunks)) if e.id is not None]
        assert ids == list(range(1, OUTBOX_SIZE))
    finally:
        server.kill()
    assert not page.live.stream_attached


def test_a_newer_stream_cuts_the_old_one_stuck_in_a_write(page: TestPage) -> None:
    old = StuckServer(page)
    newer = page.client.flask.get(page.config["events"])
    try:
        assert isinstance(old.outcome(), StreamCut)
        assert page.live.stream_attached  # the newer one is the page's stream now
        assert page.live.stream is not None
    finally:
        newer.close()
    assert not page.live.stream_attached
