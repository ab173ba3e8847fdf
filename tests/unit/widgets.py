"""LiveElement classes and helpers shared by the unit tests.

Elements keep what happened to them on the instance (never in a class or
module global), so tests stay independent.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_athena import Athena, LiveElement, expose
from flask_athena.state import AthenaState
from flask_athena.testing import TestPage, Widget

ORIGIN = "http://localhost"


class Recorder(LiveElement):
    """Notes every invocation of its methods (exposed or not) and every hook.

    ``log`` may be shared between elements to see the order of hooks across
    a tree.
    """

    js_class = "Test.Recorder"

    def __init__(self, label: str = "r", log: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.label = label
        self.invocations: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.log: list[tuple[str, str]] = [] if log is None else log

    def initial_arguments(self) -> list[Any]:
        return [self.label]

    def _note(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.invocations.append((name, args, kwargs))

    def invoked(self, name: str) -> int:
        return sum(1 for entry in self.invocations if entry[0] == name)

    @expose
    def echo(self, value: Any = None) -> Any:
        self._note("echo", value)
        return value

    @expose
    def total(self, a: int, b: int = 0, *, scale: int = 1) -> int:
        self._note("total", a, b, scale=scale)
        return (a + b) * scale

    @expose
    def fail(self) -> None:
        self._note("fail")
        raise ValueError("secret detail 42")

    @expose
    def spawn(self, label: str) -> Recorder:
        self._note("spawn", label)
        return Recorder(label, self.log)

    @expose
    def ping_back(self, value: Any) -> str:
        """Calls the browser's ``pong`` without waiting (fire-and-forget)."""
        self._note("ping_back", value)
        self.call_remote("pong", value)
        return "sent"

    def helper(self) -> None:
        """Public but not exposed: the browser must never reach it."""
        self._note("helper")

    def _private(self) -> None:
        self._note("_private")

    def connected(self) -> None:
        self.log.append((self.label, "connected"))

    def disconnected(self, reason: str) -> None:
        self.log.append((self.label, f"disconnected:{reason}"))

    def detached(self) -> None:
        self.log.append((self.label, "detached"))


def state_of(app: Flask) -> AthenaState:
    state: AthenaState = app.extensions["athena"]
    return state


def athena_of(app: Flask) -> Athena:
    return state_of(app).athena


def element(page: TestPage, widget: Widget | int = 1) -> Any:
    """The server-side element behind ``widget`` of ``page``."""
    wid = widget.id if isinstance(widget, Widget) else widget
    return page.live.elements[wid]


def post_headers(page: TestPage, **extra: str) -> dict[str, str]:
    """The headers athena.js sends with a POST."""
    headers = {
        "Origin": ORIGIN,
        "Content-Type": "application/json",
        "X-Athena-Token": page.config["token"],
    }
    headers.update(extra)
    return headers


def call_body(seq: int, method: str, *args: Any, widget: int = 1, **kwargs: Any) -> dict[str, Any]:
    return {
        "messages": [
            {
                "seq": seq,
                "type": "call",
                "widget": widget,
                "method": method,
                "args": list(args),
                "kwargs": kwargs,
            }
        ]
    }


def first_chunk(response: Any) -> bytes:
    """Read the first chunk of a streamed response, then close it."""
    try:
        return bytes(next(iter(response.response)))
    finally:
        response.close()
