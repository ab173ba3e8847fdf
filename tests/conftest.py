"""Fixtures shared by the test suites: fresh Flask apps with Athena, leak checks.

``make_app`` builds a new app per call (never a module-level app); its
teardown closes every page with ``athena.shutdown(app)`` and checks nothing
was left behind. ``no_leaks`` checks that a test left no signal receiver
connected and no greenlet running.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator
from typing import Any, Callable

import gevent
import greenlet
import pytest
from flask import Flask, render_template_string
from flask.testing import FlaskClient

from flask_athena import Athena, LiveElement, signals
from flask_athena.state import AthenaState

# tests/js holds athena.js's Node tests (node --test, run by tests/js/check.sh): nothing for pytest.
collect_ignore = ["js"]

#: The page every ``make_app`` app serves at ``/``.
PAGE_TEMPLATE = """<!doctype html>
<html><head>{{ page.head() }}</head>
<body>{% for element in elements %}{{ element }}{% endfor %}</body></html>"""

SIGNALS = [
    signals.page_opened,
    signals.page_connected,
    signals.page_disconnected,
    signals.page_closed,
    signals.call_received,
    signals.call_failed,
]


class CheckedClient(FlaskClient):
    """Flask's test client, checking every answer of the Athena endpoints.

    No body contains a traceback, nothing under the URL prefix answers 5xx,
    and every error answer under the prefix is JSON: a whole-request
    ``{"error": {"code", "message"}}`` or a consumed batch's ``{"results"}``.
    Event streams are left unread (they never end by themselves).
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        response = super().open(*args, **kwargs)
        if response.mimetype == "text/event-stream":
            return response
        body = response.get_data(as_text=True)
        assert "Traceback" not in body
        prefix = self.application.config["ATHENA_URL_PREFIX"] + "/"
        if response.request.path.startswith(prefix):
            assert response.status_code < 500, body
            if response.status_code >= 400:
                assert response.mimetype == "application/json", body
                payload = json.loads(body)
                assert isinstance(payload, dict), body
                if "results" not in payload:
                    error = payload["error"]
                    assert isinstance(error["code"], str) and isinstance(error["message"], str)
        return response


def athena_state(app: Flask) -> AthenaState:
    """``app``'s flask_athena state (where the extension keeps everything)."""
    state: AthenaState = app.extensions["athena"]
    return state


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """Factory: ``make_app(widgets=lambda: [Box()], debug=False, **config)``.

    The app serves ``/``: a new live page holding the elements ``widgets()``
    returns (called once per request). Keyword arguments go to
    ``app.config`` (``ATHENA_OUTBOX_SIZE=3``, ``SECRET_KEY=None``...). The
    app's ``Athena`` is ``athena_state(app).athena``.
    """
    made: list[tuple[Flask, Athena]] = []

    def factory(
        widgets: Callable[[], list[LiveElement]] = list, debug: bool = False, **config: Any
    ) -> Flask:
        app = Flask(__name__)
        app.config.update(TESTING=True, SECRET_KEY="test-secret")
        app.config.update(config)
        app.debug = debug
        app.test_client_class = CheckedClient
        athena = Athena(app)

        @app.route("/")
        def index() -> str:
            page = athena.page()
            elements = [page.add(element) for element in widgets()]
            return render_template_string(PAGE_TEMPLATE, page=page, elements=elements)

        made.append((app, athena))
        return app

    yield factory

    problems = []
    for app, athena in made:
        state = athena_state(app)
        if state.session_streams:
            problems.append("an event stream was left open (close streamed responses)")
        athena.shutdown(app)
        if state.pages or state.session_pages:
            problems.append("pages survived athena.shutdown(app)")
        if state.reaper_running:
            problems.append("the reaper greenlet survived athena.shutdown(app)")
    assert not problems, problems


@pytest.fixture
def no_leaks() -> Iterator[None]:
    """Fail the test if it leaves a signal receiver connected or a greenlet running.

    Greenlets are seen through greenlet's switch trace (cheap, unlike a gc
    scan): every gevent greenlet that ran during the test must be dead at
    the end (the ``make_app`` teardown has stopped each app's reaper by then).
    """
    before = {signal.name: dict(signal.receivers) for signal in SIGNALS}
    ran: weakref.WeakSet[gevent.Greenlet] = weakref.WeakSet()
    previous = greenlet.gettrace()

    def trace(event: str, args: Any) -> None:
        if event in ("switch", "throw") and isinstance(args[1], gevent.Greenlet):
            ran.add(args[1])
        if previous is not None:
            previous(event, args)

    greenlet.settrace(trace)
    try:
        yield
    finally:
        greenlet.settrace(previous)
    leaked = [signal.name for signal in SIGNALS if dict(signal.receivers) != before[signal.name]]
    assert not leaked, f"signal receivers left connected: {leaked}"
    running = [g for g in ran if not g.dead]
    for running_greenlet in running:
        running_greenlet.kill(block=True, timeout=1)
    assert not running, f"greenlets left running: {running}"
