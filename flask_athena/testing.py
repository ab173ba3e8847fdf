"""Drive live pages from tests without a browser or sockets.

:class:`AthenaClient` wraps Flask's test client: it GETs a view that renders a
live page, reads the page's config and widgets from the HTML, and then speaks
the real wire protocol to the real endpoints (so session, token and ordering
rules all apply). Server → browser calls are read straight from the page's
outbox::

    from flask_athena.testing import AthenaClient

    def test_chat(app):
        client = AthenaClient(app)
        page = client.open("/")
        box = page.widget("ChatThing.ChatterBox")
        assert page.call(box, "say", "hello") == 5
        assert page.received_calls("hear") == [["alice", "hello"]]

What a test sends is typed as wire data (``JSONValue``); what it gets back
is ``Any``, the decoded JSON a test compares or indexes at will.
"""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any, Callable, NamedTuple

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.wrappers import Response

from .errors import AthenaError, RemoteError
from .page import LivePage
from .protocol import JSONValue
from .sse import parse_events
from .state import AthenaState

_META = re.compile(r'<meta name="athena-config" content="([^"]*)">')
_WIDGET = re.compile(
    r'data-athena-widget="(\d+)" data-athena-class="([^"]*)" '
    r'data-athena-module="[^"]*" data-athena-args="([^"]*)"'
)


class Widget(NamedTuple):
    """A widget as the browser would see it in the page's markup."""

    id: int
    js_class: str
    args: list[JSONValue]


class CallFailed(AthenaError):
    """A call answered with an error; ``code``, ``status`` and ``body`` say which."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        error = body.get("error", {})
        super().__init__(error.get("message", "call failed"))
        self.status = status
        self.code = error.get("code", "unknown")
        self.body = body


def parse_widgets(html: str) -> list[Widget]:
    """Every widget in ``html``, in document order."""
    return [
        Widget(int(wid), unescape(cls), json.loads(unescape(args)))
        for wid, cls, args in _WIDGET.findall(html)
    ]


class TestPage:
    """One opened page, speaking the protocol like ``athena.js`` does."""

    __test__ = False  # not a pytest class

    def __init__(self, client: AthenaClient, html: str) -> None:
        match = _META.search(html)
        if match is None:
            raise AssertionError("the response has no {{ page.head() }} config")
        self.client = client
        self.html = html
        self.config: dict[str, Any] = json.loads(unescape(match.group(1)))
        self.id: str = self.config["page"]
        self.widgets = parse_widgets(html)
        self.next_seq = 1
        self._read = 0  # last outbox seq returned by received()
        self._stream: Response | None = None

    @property
    def live(self) -> LivePage:
        """The server-side :class:`LivePage` (in-memory broker only)."""
        page = self.client.state.pages.get(self.id)
        if page is None:
            raise AssertionError("the page is closed")
        return page

    def widget(self, key: str | int) -> Widget:
        """The first widget with this ``js_class`` (or this id)."""
        for widget in self.widgets:
            if widget.id == key or widget.js_class == key:
                return widget
        raise LookupError(f"no widget {key!r} on the page")

    def connect(self) -> None:
        """Open the event stream through the real endpoint (``connected()`` hooks run).

        The stream is not read from; use :meth:`received`.
        """
        self.disconnect()
        response = self.client.flask.get(self.config["events"], buffered=False)
        if response.status_code != 200:
            response.close()
            raise AssertionError(f"events endpoint answered {response.status_code}")
        self._stream = response

    def disconnect(self) -> None:
        """Close the event stream opened by :meth:`connect`, as a dropped connection would."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    # -- raw protocol -------------------------------------------------------

    def post(
        self,
        body: JSONValue | bytes,
        headers: dict[str, str] | None = None,
        path: str | None = None,
    ) -> tuple[int, Any]:
        """POST ``body`` (JSON-encoded unless bytes) to the calls endpoint.

        Sends the headers a browser would (Origin, token) unless overridden.
        """
        sent = {
            "Origin": "http://localhost",
            "X-Athena-Token": self.config["token"],
            "Content-Type": "application/json",
        }
        sent.update(headers or {})
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        response = self.client.flask.post(path or self.config["calls"], data=data, headers=sent)
        payload = response.get_json(silent=True) if response.data else None
        return response.status_code, payload

    def send(self, *messages: dict[str, Any], ack: int | None = None) -> tuple[int, Any]:
        """Send messages; ``call``/``detach`` messages get the next seq numbers."""
        out = []
        for message in messages:
            if message.get("type") in ("call", "detach") and "seq" not in message:
                message = {**message, "seq": self.next_seq}
                self.next_seq += 1
            out.append(message)
        body: dict[str, Any] = {"messages": out}
        if ack is not None:
            body["ack"] = ack
        return self.post(body)

    # -- browser → server ---------------------------------------------------

    def call(self, widget: Widget | int, method: str, *args: JSONValue, **kwargs: JSONValue) -> Any:
        """Call an exposed method and return its value.

        Raises :class:`CallFailed` for a whole-request error or a client error
        (with its ``code``) and :class:`RemoteError` when the method raised.
        """
        wid = widget.id if isinstance(widget, Widget) else widget
        status, body = self.send(
            {"type": "call", "widget": wid, "method": method, "args": list(args), "kwargs": kwargs}
        )
        if not body or "results" not in body:
            raise CallFailed(status, body or {})
        result = body["results"][0]
        if "error" in result:
            if status != 200:
                raise CallFailed(status, {"error": result["error"]})
            raise RemoteError(result["error"]["message"], js_name=result["error"].get("name", ""))
        return result["ok"]

    def detach(self, widget: Widget | int) -> tuple[int, Any]:
        """Detach ``widget`` as the browser would (a sequenced ``detach`` message)."""
        wid = widget.id if isinstance(widget, Widget) else widget
        return self.send({"type": "detach", "widget": wid})

    # -- server → browser ---------------------------------------------------

    def received(self) -> list[dict[str, Any]]:
        """Messages the server queued for the browser since the last look."""
        frames = self.live.outbox.read(self._read)
        if frames is None:
            raise AssertionError("the outbox was trimmed past what this test read")
        events = parse_events(b"".join(frames))
        if events:
            self._read = int(events[-1].id or self._read)
        return [json.loads(event.data) for event in events]

    def received_calls(self, method: str | None = None) -> list[list[Any]]:
        """The ``args`` of ``call`` messages received (of ``method`` if given)."""
        return [
            m["args"]
            for m in self.received()
            if m["type"] == "call" and (method is None or m["method"] == method)
        ]

    def answer(
        self, call: int, value: JSONValue = None, error: tuple[str, str] | None = None
    ) -> None:
        """Answer server → browser call ``call`` (with ``error=(name, message)`` to throw)."""
        message: dict[str, JSONValue] = {"type": "result", "call": call}
        if error is None:
            message["ok"] = value
        else:
            message["error"] = {"name": error[0], "message": error[1]}
        self.send(message)

    def close(self) -> int:
        """Send the close beacon; return its status (204)."""
        response = self.client.flask.post(
            self.config["close"],
            json={"token": self.config["token"]},
            headers={"Origin": "http://localhost"},
        )
        return response.status_code


class AthenaClient:
    """Open live pages of ``app`` through Flask's test client (one browser session)."""

    def __init__(self, app: Flask, flask_client: FlaskClient | None = None) -> None:
        self.app = app
        self.flask = flask_client or app.test_client()

    @property
    def state(self) -> AthenaState:
        """The app's flask_athena state (its pages, config, broker)."""
        state: AthenaState = self.app.extensions["athena"]
        return state

    def open(self, url: str = "/", **kwargs: Any) -> TestPage:
        """GET ``url`` (a view rendering a live page) and return its :class:`TestPage`."""
        response = self.flask.get(url, **kwargs)
        if response.status_code != 200:
            raise AssertionError(f"GET {url} answered {response.status_code}")
        return TestPage(self, response.get_data(as_text=True))


def collect_signal(signal: Any, app: Flask) -> tuple[list[dict[str, Any]], Callable[[], None]]:
    """Record ``signal`` sent by ``app``; return ``(records, disconnect)``."""
    records: list[dict[str, Any]] = []

    def receiver(sender: Any, **extra: Any) -> None:
        records.append(extra)

    signal.connect(receiver, sender=app, weak=False)
    # Disconnect from every sender: blinker's disconnect(receiver, sender=app)
    # only drops the association and keeps the (strong) receiver forever.
    return records, lambda: signal.disconnect(receiver)
