"""Page lifecycle: connected once, disconnected then detached on close, idle timeout."""

from __future__ import annotations

from time import monotonic
from typing import Callable

import pytest
from flask import Flask

from flask_athena import LiveElement
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, element, state_of


def open_page(
    make_app: Callable[..., Flask], **config: object
) -> tuple[Flask, TestPage, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []

    def widgets() -> list[LiveElement]:
        parent = Recorder("parent", log)
        parent.add(Recorder("child", log))
        return [parent]

    app = make_app(widgets, **config)
    return app, AthenaClient(app).open(), log


def test_connected_runs_once_on_first_stream_attach(make_app: Callable[..., Flask]) -> None:
    _, page, log = open_page(make_app)
    assert log == []
    page.connect()
    assert log == [("parent", "connected"), ("child", "connected")]
    page.disconnect()
    page.connect()  # a reconnect is not a new connection
    assert log == [("parent", "connected"), ("child", "connected")]
    page.disconnect()


def test_element_added_after_connect_gets_connected_at_once(
    make_app: Callable[..., Flask],
) -> None:
    _, page, log = open_page(make_app)
    page.connect()
    log.clear()
    element(page, 1).add(Recorder("late", log))
    assert log == [("late", "connected")]
    page.disconnect()


def test_close_runs_disconnected_then_detached(make_app: Callable[..., Flask]) -> None:
    _, page, log = open_page(make_app)
    live = page.live
    assert page.close() == 204
    assert log == [
        ("parent", "disconnected:closed"),
        ("child", "disconnected:closed"),
        ("child", "detached"),
        ("parent", "detached"),
    ]
    assert live.closed and live.close_reason == "closed"
    assert live.elements == {}


def test_closed_page_is_forgotten_and_answers_404(make_app: Callable[..., Flask]) -> None:
    app, page, _ = open_page(make_app)
    page.close()
    assert page.id not in state_of(app).pages
    status, body = page.send({"type": "call", "widget": 1, "method": "echo"})
    assert (status, body["error"]["code"]) == (404, "page-not-found")
    assert page.close() == 204  # closing twice is fine


def test_idle_page_is_closed_after_the_page_timeout(make_app: Callable[..., Flask]) -> None:
    app, page, log = open_page(make_app, ATHENA_PAGE_TIMEOUT=10)
    live = page.live
    state_of(app).reap(monotonic() + 5)
    assert not live.closed
    state_of(app).reap(monotonic() + 11)
    assert live.closed and live.close_reason == "timeout"
    assert ("parent", "disconnected:timeout") in log
    assert page.id not in state_of(app).pages


def test_page_with_a_stream_attached_is_never_timed_out(
    make_app: Callable[..., Flask],
) -> None:
    app, page, _ = open_page(make_app, ATHENA_PAGE_TIMEOUT=10)
    page.connect()
    state_of(app).reap(monotonic() + 1000)
    assert not page.live.closed
    page.disconnect()
    # The idle clock restarts when the stream drops.
    state_of(app).reap(monotonic() + 5)
    assert not page.live.closed
    live = page.live
    state_of(app).reap(monotonic() + 11)
    assert live.closed


def test_a_call_counts_as_activity(make_app: Callable[..., Flask]) -> None:
    app, page, _ = open_page(make_app, ATHENA_PAGE_TIMEOUT=10)
    page.live.idle_since -= 8
    page.call(1, "echo", 1)
    state_of(app).reap(monotonic() + 5)
    assert not page.live.closed


def test_shutdown_closes_every_page_with_reason_shutdown(
    make_app: Callable[..., Flask],
) -> None:
    app, page, log = open_page(make_app)
    live = page.live
    state_of(app).athena.shutdown(app)
    assert live.close_reason == "shutdown"
    assert ("child", "disconnected:shutdown") in log
    assert state_of(app).pages == {}


def test_hook_errors_are_logged_and_do_not_stop_the_close(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def disconnected(self, reason: str) -> None:
            raise RuntimeError("disconnect hook bug")

    app = make_app(lambda: [Faulty("f"), Recorder("ok")])
    page = AthenaClient(app).open()
    live = page.live
    assert page.close() == 204
    assert live.closed and live.elements == {}
    assert "disconnect hook bug" in caplog.text
