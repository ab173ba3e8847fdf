"""Every signal is sent by the app with its documented keyword arguments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena import signals
from flask_athena.errors import MethodNotFound, WidgetNotFound
from flask_athena.testing import AthenaClient, collect_signal

from .widgets import Recorder, element, first_chunk

Recorded = Callable[[Any, Flask], list[dict[str, Any]]]


@pytest.fixture
def record() -> Iterator[Recorded]:
    """``record(signal, app)`` -> the list its sends are appended to (disconnected after)."""
    disconnects: list[Callable[[], None]] = []

    def start(signal: Any, app: Flask) -> list[dict[str, Any]]:
        records, disconnect = collect_signal(signal, app)
        disconnects.append(disconnect)
        return records

    yield start
    for disconnect in disconnects:
        disconnect()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()])


def test_page_opened_is_sent_with_the_page(app: Flask, record: Recorded) -> None:
    opened = record(signals.page_opened, app)
    page = AthenaClient(app).open()
    assert opened == [{"page": page.live}]


def test_page_connected_says_whether_it_is_the_first_time(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    connected = record(signals.page_connected, app)
    page.connect()
    page.disconnect()
    page.connect()
    page.disconnect()
    assert connected == [{"page": page.live, "first": True}, {"page": page.live, "first": False}]


def test_page_disconnected_is_sent_when_the_stream_ends(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    disconnected = record(signals.page_disconnected, app)
    page.connect()
    assert disconnected == []
    page.disconnect()
    assert disconnected == [{"page": page.live}]


def test_page_closed_is_sent_with_the_reason(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    live = page.live
    closed = record(signals.page_closed, app)
    page.close()
    assert closed == [{"page": live, "reason": "closed"}]


def test_call_received_is_sent_before_the_method_runs(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    received = record(signals.call_received, app)
    page.call(1, "echo", "x")
    assert received == [{"page": page.live, "element": element(page), "method": "echo"}]


def test_call_failed_is_sent_for_user_exceptions(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    failed = record(signals.call_failed, app)
    page.send({"type": "call", "widget": 1, "method": "fail"})
    [sent] = failed
    assert (sent["page"], sent["element"], sent["method"]) == (page.live, element(page), "fail")
    assert isinstance(sent["error"], ValueError)


def test_call_failed_is_sent_for_client_errors(app: Flask, record: Recorded) -> None:
    page = AthenaClient(app).open()
    failed = record(signals.call_failed, app)
    received = record(signals.call_received, app)
    page.send({"type": "call", "widget": 1, "method": "helper"})
    page.send({"type": "call", "widget": 99, "method": "echo"})
    assert [type(s["error"]) for s in failed] == [MethodNotFound, WidgetNotFound]
    assert [s["element"] for s in failed] == [element(page), None]
    assert received == []  # nothing ran


def test_messages_sent_counts_what_each_stream_write_carries(app: Flask, record: Recorded) -> None:
    # Sent only while a receiver is connected (a stream writes very often):
    # what this receiver gets is what the app's metrics would count.
    page = AthenaClient(app).open()
    box = element(page)
    box.call_remote("pong", 1)
    box.call_remote("pong", 2)
    sent = record(signals.messages_sent, app)
    assert b"pong" in first_chunk(
        page.client.flask.get(page.config["events"], buffered=False)
    )  # first connection: both messages in its first write
    assert sent == [{"page": page.live, "count": 2, "replayed": False}]
    box.call_remote("pong", 3)
    resumed = page.client.flask.get(
        page.config["events"], buffered=False, headers={"Last-Event-ID": "1"}
    )
    assert b"pong" in first_chunk(resumed)
    assert sent[1:] == [{"page": page.live, "count": 2, "replayed": True}]


def test_signals_of_another_app_are_not_received(
    make_app: Callable[..., Flask], record: Recorded
) -> None:
    first, second = make_app(lambda: [Recorder()]), make_app(lambda: [Recorder()])
    opened = record(signals.page_opened, first)
    AthenaClient(second).open()
    assert opened == []


def test_regression_collect_signal_disconnect_left_the_receiver_connected(app: Flask) -> None:
    # disconnect() used to drop only the sender association; blinker kept the
    # strong receiver in signal.receivers for the life of the process.
    before = dict(signals.page_opened.receivers)
    records, disconnect = collect_signal(signals.page_opened, app)
    assert len(signals.page_opened.receivers) == len(before) + 1
    disconnect()
    assert dict(signals.page_opened.receivers) == before
    AthenaClient(app).open()
    assert records == []
