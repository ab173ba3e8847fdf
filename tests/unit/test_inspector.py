"""The inspector: refused without ``authorize``, a live page that follows pages with it."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

import gevent
import pytest
from flask import Flask

from flask_athena.inspector import Inspector
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder

INSPECTOR = "/_athena/inspector/"


def inspected(make_app: Callable[..., Flask], authorize: Any) -> Flask:
    app = make_app(lambda: [Recorder()])
    Inspector(app, authorize=authorize)
    return app


def updates(page: TestPage) -> list[list[dict[str, Any]]]:
    return [args[0] for args in page.received_calls("update")]


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        gevent.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_without_authorize_nothing_is_served(make_app: Callable[..., Flask]) -> None:
    app = inspected(make_app, None)
    client = app.test_client()
    for path in (INSPECTOR, INSPECTOR + "workers.json", INSPECTOR + "static/inspector.css"):
        response = client.get(path)
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not-found"


def test_a_refusing_authorize_gets_403(make_app: Callable[..., Flask]) -> None:
    app = inspected(make_app, lambda: False)
    for path in (INSPECTOR, INSPECTOR + "workers.json"):
        response = app.test_client().get(path)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"


def test_workers_json_lists_pages_elements_and_topics(make_app: Callable[..., Flask]) -> None:
    app = inspected(make_app, lambda: True)
    page = AthenaClient(app).open()
    page.call(1, "echo", "x")
    with app.test_request_context():
        page.live.elements[1].join("room:lobby")
    body = app.test_client().get(INSPECTOR + "workers.json").get_json()
    (worker,) = body["workers"]
    assert worker["broker"] == "memory"
    assert worker["page_count"] == 1
    (described,) = worker["pages"]
    assert described["tree"][0]["class"] == "Recorder"
    assert described["tree"][0]["topics"] == ["room:lobby"]
    assert worker["topics"] == [{"topic": "room:lobby", "members": 1, "presence": 0}]
    # Page ids and tokens are secrets: never shown.
    text = json.dumps(body)
    assert page.config["page"] not in text and page.config["token"] not in text


def test_the_inspector_page_updates_as_pages_open_and_close(
    make_app: Callable[..., Flask],
) -> None:
    app = inspected(make_app, lambda: True)
    inspector = AthenaClient(app).open(INSPECTOR)
    assert inspector.widget("AthenaInspector.Inspector")
    inspector.connect()
    try:
        other = AthenaClient(app).open()

        def pages_shown() -> int:
            seen = updates(inspector)
            return seen[-1][0]["page_count"] if seen else -1

        wait_for(lambda: pages_shown() == 2)  # the inspector's own page and the new one
        other.close()
        wait_for(lambda: pages_shown() == 1)
    finally:
        inspector.disconnect()


def test_the_inspector_needs_athena_first() -> None:
    with pytest.raises(RuntimeError, match="init_app"):
        Inspector(Flask(__name__), authorize=lambda: True)
