"""ATHENA_METRICS: the athena_* metrics move as pages open, call, fail, reconnect and close.

Values are read through prometheus_client's registry (the default one, where
flask_athena registers its metrics), as deltas: other tests of the process
count into the same metrics.
"""

from __future__ import annotations

from typing import Any, Callable

import gevent
import pytest
from flask import Flask
from prometheus_client import REGISTRY, generate_latest

from flask_athena import signals
from flask_athena.errors import ConfigurationError, ConnectionLost, RemoteError
from flask_athena.metrics import AthenaMetrics, BoundedLabel, metrics_view
from flask_athena.testing import AthenaClient, CallFailed, TestPage

from .widgets import Recorder, element, first_chunk


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """``delta = Delta(); ...; delta("athena_pages_opened_total")`` -> how much it moved."""

    def __init__(self) -> None:
        self.before = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for metric in REGISTRY.collect()
            if metric.name.startswith("athena_")
            for sample in metric.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return value(name, **labels) - self.before.get(key, 0.0)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()], ATHENA_METRICS=True)


def stream(page: TestPage, last: int | None = None) -> bytes:
    """Open the page's event stream, read its first chunk, close it."""
    headers = {"Last-Event-ID": str(last)} if last is not None else {}
    response = page.client.flask.get(page.config["events"], buffered=False, headers=headers)
    assert response.status_code == 200
    return first_chunk(response)


def test_pages_open_moves_as_pages_open_and_close(app: Flask) -> None:
    delta = Delta()
    first = AthenaClient(app).open()
    second = AthenaClient(app).open()
    assert delta("athena_pages_open") == 2
    assert delta("athena_pages_opened_total") == 2
    first.close()
    assert delta("athena_pages_open") == 1
    assert delta("athena_pages_closed_total", reason="closed") == 1
    second.live.close("timeout")
    assert delta("athena_pages_open") == 0
    assert delta("athena_pages_closed_total", reason="timeout") == 1


def test_browser_calls_count_by_method_and_code_with_latency(app: Flask) -> None:
    page = AthenaClient(app).open()
    delta = Delta()
    assert page.call(1, "echo", "x") == "x"
    assert page.call(1, "total", 1, 2) == 3
    with pytest.raises(RemoteError):
        page.call(1, "fail")
    with pytest.raises(CallFailed):
        page.call(1, "total", "not", "numbers", "at all")
    assert delta("athena_calls_total", direction="browser", method="echo", code="ok") == 1
    assert delta("athena_calls_total", direction="browser", method="total", code="ok") == 1
    assert delta("athena_calls_total", direction="browser", method="fail", code="remote-error") == 1
    assert (
        delta("athena_calls_total", direction="browser", method="total", code="bad-arguments") == 1
    )
    # echo, total and fail ran (the bad arguments never reached the method).
    assert delta("athena_call_duration_seconds_count", direction="browser") == 3


def test_methods_the_browser_names_are_never_labels_unless_exposed(app: Flask) -> None:
    page = AthenaClient(app).open()
    delta = Delta()
    for name in ("no_such_method_4f2a", "helper", "_private"):
        with pytest.raises(CallFailed):
            page.call(1, name)
    assert (
        delta(
            "athena_calls_total", direction="browser", method="(unknown)", code="method-not-found"
        )
        == 3
    )
    exposition = generate_latest(REGISTRY).decode()
    assert "no_such_method_4f2a" not in exposition
    assert 'method="helper"' not in exposition


def test_server_calls_count_answers_errors_and_lost_connections(app: Flask) -> None:
    page = AthenaClient(app).open()
    box = element(page)
    delta = Delta()
    ok = box.call_remote("pong", 1)
    thrown = box.call_remote("pong", 2)
    lost = box.call_remote("pong", 3)
    calls = [m for m in page.received() if m["type"] == "call"]
    page.answer(calls[0]["call"], "fine")
    page.answer(calls[1]["call"], error=("TypeError", "nope"))
    assert ok.get(timeout=5) == "fine"
    with pytest.raises(RemoteError):
        thrown.get(timeout=5)
    page.close()
    with pytest.raises(ConnectionLost):
        lost.get(timeout=5)
    gevent.sleep(0)  # link callbacks run in the hub
    assert delta("athena_calls_total", direction="server", method="pong", code="ok") == 1
    assert delta("athena_calls_total", direction="server", method="pong", code="remote-error") == 1
    assert (
        delta("athena_calls_total", direction="server", method="pong", code="connection-lost") == 1
    )
    assert delta("athena_call_duration_seconds_count", direction="server") == 2


def test_streams_delivered_and_replayed(app: Flask) -> None:
    page = AthenaClient(app).open()
    box = element(page)
    delta = Delta()
    box.call_remote("pong", 1)
    box.call_remote("pong", 2)
    assert b"pong" in stream(page)  # first connection: both delivered
    assert delta("athena_messages_delivered_total") == 2
    assert delta("athena_messages_replayed_total") == 0
    assert delta("athena_messages_published_total") == 2
    assert delta("athena_streams_open") == 0  # opened and closed again
    box.call_remote("pong", 3)
    # Reconnect having seen only message 1: messages 2 and 3 come by replay.
    assert b"pong" in stream(page, last=1)
    assert delta("athena_messages_replayed_total") == 2
    assert delta("athena_messages_delivered_total") == 4
    assert delta("athena_messages_published_total") == 3


def test_streams_open_while_a_stream_is_read(app: Flask) -> None:
    page = AthenaClient(app).open()
    delta = Delta()
    response = page.client.flask.get(page.config["events"], buffered=False)
    try:
        next(iter(response.response))
        assert delta("athena_streams_open") == 1
    finally:
        response.close()
    assert delta("athena_streams_open") == 0


def test_gone_counts_by_reason(app: Flask) -> None:
    page = AthenaClient(app).open()
    delta = Delta()
    page.close()
    assert b"gone" in stream(page)
    assert delta("athena_gone_total", reason="unknown-page") == 1


def test_stream_cuts_count_by_reason(app: Flask) -> None:
    delta = Delta()
    signals.stream_cut.send(app, page=None, reason="write blocked")
    signals.stream_cut.send(app, page=None, reason="something new")
    assert delta("athena_stream_cuts_total", reason="write-blocked") == 1
    assert delta("athena_stream_cuts_total", reason="other") == 1


def test_broker_errors_reconnects_and_forwarded_posts(app: Flask) -> None:
    # The Redis broker sends these (tests/integration covers it for real).
    delta = Delta()
    signals.broker_error.send(app, operation="subscribe", error=ConnectionError("down"))
    signals.broker_reconnected.send(app)
    signals.post_forwarded.send(app, kind="calls", status=200)
    assert delta("athena_broker_errors_total", operation="subscribe") == 1
    assert delta("athena_broker_reconnects_total") == 1
    assert delta("athena_forwarded_posts_total", kind="calls", status="200") == 1


def test_no_label_carries_a_page_id(app: Flask) -> None:
    pages = [AthenaClient(app).open() for _ in range(3)]
    for page in pages:
        page.call(1, "echo", page.config["page"])
        element(page).call_remote("pong", page.config["page"])
        stream(page)
        page.close()
    exposition = generate_latest(REGISTRY).decode()
    for page in pages:
        assert page.config["page"] not in exposition
        assert page.config["token"] not in exposition


def test_metrics_view_answers_in_the_prometheus_format(app: Flask) -> None:
    app.add_url_rule("/metrics", view_func=metrics_view)
    AthenaClient(app).open()
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert b"athena_pages_open" in response.data


def test_metrics_are_off_by_default(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()])
    delta = Delta()
    AthenaClient(app).open()
    assert app.extensions["athena"].ops.metrics is None
    assert delta("athena_pages_opened_total") == 0


@pytest.mark.parametrize("bad", ["maybe", 2, None])
def test_a_bad_metrics_setting_names_the_key(make_app: Callable[..., Flask], bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="ATHENA_METRICS"):
        make_app(ATHENA_METRICS=bad)


def test_bounded_label_keeps_at_most_its_limit() -> None:
    label = BoundedLabel(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d")] == ["a", "b", "(other)", "a", "(other)"]


def test_a_second_metrics_object_uses_its_own_registry() -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = AthenaMetrics(registry)
    metrics.page_opened()
    assert registry.get_sample_value("athena_pages_open") == 1


def test_make_wsgi_app_mounts_with_dispatcher_middleware(app: Flask) -> None:
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from werkzeug.test import Client

    from flask_athena.metrics import make_wsgi_app

    AthenaClient(app).open()
    mounted = DispatcherMiddleware(app.wsgi_app, {"/metrics": make_wsgi_app()})
    response = Client(mounted).get("/metrics")
    assert response.status_code == 200
    assert b"athena_pages_open" in response.data


def test_presence_members_per_topic_follow_joins_and_leaves(
    make_app: Callable[..., Flask],
) -> None:
    from .test_presence import ROOM, Member

    app = make_app(lambda: [Member()], ATHENA_METRICS=True)
    alice, bob = AthenaClient(app).open(), AthenaClient(app).open()
    alice.connect()
    bob.connect()
    try:
        alice.call(1, "enter", "alice")
        bob.call(1, "enter", "bob")
        assert value("athena_presence_members", topic=ROOM) == 2
        bob.call(1, "exit")
        assert value("athena_presence_members", topic=ROOM) == 1
    finally:
        alice.disconnect()
        bob.disconnect()
