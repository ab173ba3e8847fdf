"""The app the browser tests run under gunicorn: ``tests.apps.browser_app:create_app()``.

It covers what the example app does not show: return values and errors in
both directions, bad arguments, nesting, widgets built on demand from modules
the page did not load, page-level functions, detaching from either side, and
a relay page for the fault-injection test.

``GET /core`` renders a :class:`Probe` with nested :class:`Child` widgets;
``GET /relay`` renders a :class:`Sink`. The ``/control/...`` routes let a
test reach a page from outside the browser (push messages to it while the
browser is offline, read what it received, count calls): test-app only, they
leak page internals. ``ATHENA_*`` settings come from the environment.

Nothing is module-level mutable state: every app gets its own :class:`Stats`.
"""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
from flask import Flask, abort, jsonify, render_template, request

from flask_athena import Athena, LiveElement, LivePage, expose, signals
from flask_athena.config import config_from_env
from flask_athena.errors import RemoteError


class Stats:
    """Per-app counters a test reads through ``GET /control/stats``."""

    def __init__(self) -> None:
        #: How many times Probe.poke ran (the security test's canary).
        self.pokes = 0
        #: How many times Probe.slow_count finished (cancellation tests).
        self.slow_runs = 0
        #: Probe.held_count calls waiting for ``POST /control/release`` now.
        self.holding = 0
        self.gate = gevent.event.Event()
        #: Why each closed page closed, by page id (the ``page_closed`` signal):
        #: ``"closed"`` is the browser's close beacon.
        self.closed: dict[str, str] = {}


class Probe(LiveElement):
    """The root widget of ``/core``: one exposed method per behaviour under test."""

    js_class = "Core.Probe"
    template = "browser_probe.html"

    def __init__(self, name: str, stats: Stats) -> None:
        super().__init__()
        self.name = name
        self.stats = stats
        #: Lifecycle events of this probe and its descendants, in order.
        self.log: list[str] = []
        self.clicks = 0
        self.added_runs = 0
        first = self.add(Child("first", self.log))
        first.add(Leaf("leaf", self.log))
        self.add(Child("second", self.log))

    def initial_arguments(self) -> list[Any]:
        return [self.name]

    # -- browser → server ---------------------------------------------------

    @expose
    def add_numbers(self, a: int, b: int) -> int:
        self.added_runs += 1
        return a + b

    @expose
    def greet(self, name: str, greeting: str = "Hello", punctuation: str = "!") -> str:
        return f"{greeting}, {name}{punctuation}"

    @expose
    def describe(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Echo what arrived, typed as Python saw it."""
        return {
            "args": list(args),
            "kwargs": kwargs,
            "types": [type(a).__name__ for a in args],
        }

    @expose
    def fail(self, message: str) -> None:
        raise ValueError(message)

    @expose
    def added_count(self) -> int:
        return self.added_runs

    @expose
    def clicked(self) -> int:
        self.clicks += 1
        return self.clicks

    @expose
    def poke(self) -> int:
        self.stats.pokes += 1
        return self.stats.pokes

    def not_exposed(self) -> str:
        return "must never run from the browser"

    # -- server → browser ---------------------------------------------------

    @expose
    def ask(self, method: str, args: list[Any]) -> dict[str, Any]:
        """Call the browser's ``method(*args)``, wait for it, report what happened.

        Runs while this call holds the page's call lane: the browser's answer
        must not be queued behind it (no deadlock).
        """
        return _outcome(lambda: self.call_remote(method, *args).get(timeout=10))

    @expose
    def ask_and_cancel(self, after: float) -> dict[str, Any]:
        """Call the browser's ``waitForCancel``, cancel the call ``after`` seconds
        later, and report what ``cancel()`` and ``get()`` did."""
        call = self.call_remote("waitForCancel")
        gevent.sleep(after)
        cancelled = call.cancel()
        return {"cancelled": cancelled, "again": call.cancel(), **_outcome(call.get)}

    @expose
    def slow_count(self, seconds: float) -> int:
        """Take ``seconds``, then count the run (cancellation tests)."""
        gevent.sleep(seconds)
        self.stats.slow_runs += 1
        return self.stats.slow_runs

    @expose
    def held_count(self) -> int:
        """Wait until a test releases it (``POST /control/release``), then count
        the run like :meth:`slow_count`: a call the server holds for as long as
        the test needs, so a test proves "while the server still held it" by
        reading ``holding`` instead of by a clock."""
        self.stats.holding += 1
        self.stats.gate.clear()
        try:
            if not self.stats.gate.wait(timeout=60):
                raise RuntimeError("held_count: not released within 60 s")
        finally:
            self.stats.holding -= 1
        self.stats.slow_runs += 1
        return self.stats.slow_runs

    @expose
    def slow_runs(self) -> int:
        return self.stats.slow_runs

    @expose
    def ask_global(self, name: str, args: list[Any]) -> dict[str, Any]:
        """Call the page-level function ``name`` (``Athena.registerGlobal``) and report."""
        page = self.page
        assert page is not None
        return _outcome(lambda: page.call_remote(name, *args).get(timeout=10))

    # -- nesting and dynamic widgets -----------------------------------------

    @expose
    def tree(self) -> dict[str, Any]:
        """The server's view of this widget tree: ids, classes, parents, children."""
        return _tree(self)

    @expose
    def make_thing(self, label: str) -> LiveElement:
        """Return a new widget whose module (``Dynamic``) the page never loaded."""
        return self.add(Thing(label, self.log))

    @expose
    def push_gadget(self, label: str) -> dict[str, Any]:
        """Pass a new widget (module ``Pushed``) to the browser; report its answer."""
        gadget = self.add(Gadget(label, self.log))
        answer = self.call_remote("adopt", gadget).get(timeout=10)
        return {"server_id": gadget.id, "server_parent": self.id, "browser": answer}

    # -- detaching ----------------------------------------------------------

    @expose
    def detach_child(self, widget_id: int) -> bool:
        """Detach a descendant from the server side."""
        page = self.page
        assert page is not None
        element = page.elements.get(widget_id)
        if element is None or element is self:
            return False
        element.detach()
        return True

    @expose
    def lifecycle(self) -> list[str]:
        return self.log

    @expose
    def on_page(self) -> list[int]:
        """Ids of the elements the server still holds for this page."""
        page = self.page
        assert page is not None
        return sorted(page.elements)


class Child(LiveElement):
    js_class = "Core.Child"
    template = "browser_child.html"

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name = name
        self.log = log

    def initial_arguments(self) -> list[Any]:
        return [self.name]

    @expose
    def whoami(self) -> str:
        return self.name

    def detached(self) -> None:
        self.log.append(f"detached:{self.name}")


class Leaf(Child):
    js_class = "Core.Leaf"


class Thing(Child):
    """Built on demand: returned from an exposed method."""

    js_class = "Dynamic.Thing"


class Gadget(Child):
    """Built on demand: passed as an argument to ``call_remote``."""

    js_class = "Pushed.Gadget"


class Sink(LiveElement):
    """The relay page's widget: numbered messages in both directions."""

    js_class = "Relay.Sink"
    template = "browser_sink.html"

    def __init__(self) -> None:
        super().__init__()
        #: Numbers passed to record(), in the order the calls ran.
        self.received: list[int] = []

    @expose
    def record(self, n: int) -> int:
        self.received.append(n)
        return n

    def push(self, start: int, count: int, pause: float) -> None:
        """Publish ``take(n)`` for ``start .. start+count-1`` from a greenlet."""

        def run() -> None:
            for n in range(start, start + count):
                if self.page is None:
                    return
                self.call_remote("take", n)
                gevent.sleep(pause)

        gevent.spawn(run)


def _outcome(get: Any) -> dict[str, Any]:
    try:
        return {"ok": get()}
    except RemoteError as exc:
        return {"error": type(exc).__name__, "js_name": exc.js_name, "message": exc.message}
    except Exception as exc:  # CallTimeout, ConnectionLost: report, do not raise
        return {"error": type(exc).__name__, "message": str(exc)}


def _tree(element: LiveElement) -> dict[str, Any]:
    return {
        "id": element.id,
        "class": element.js_class,
        "parent": element.parent.id if element.parent is not None else None,
        "children": [_tree(child) for child in element.children],
    }


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "flask-athena-browser-tests"
    app.config.update(config_from_env())
    athena = Athena(app)
    stats = Stats()

    def on_page_closed(sender: Flask, page: LivePage, reason: str) -> None:
        stats.closed[page.id] = reason

    # The receiver lives as long as the app (blinker keeps a weak reference).
    app.extensions["browser_app_on_page_closed"] = on_page_closed
    signals.page_closed.connect(on_page_closed, sender=app)

    def page_of(page_id: str) -> LivePage:
        page = athena.state(app).pages.get(page_id)
        if page is None:
            abort(404)
        return page

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/core")
    def core() -> str:
        page = athena.page()
        probe = page.add(Probe("probe", stats))
        return render_template("browser_core.html", page=page, probe=probe)

    @app.get("/relay")
    def relay() -> str:
        page = athena.page()
        sink = page.add(Sink())
        return render_template("browser_relay.html", page=page, sink=sink)

    @app.get("/control/stats")
    def control_stats() -> Any:
        return jsonify(
            {
                "pokes": stats.pokes,
                "pages": len(athena.state(app).pages),
                "holding": stats.holding,
                "slow_runs": stats.slow_runs,
            }
        )

    @app.post("/control/release")
    def control_release() -> Any:
        """Let the Probe.held_count calls waiting now finish."""
        held = stats.holding
        stats.gate.set()
        return jsonify({"released": held})

    @app.get("/control/closed")
    def control_closed() -> Any:
        return jsonify(stats.closed)

    @app.get("/control/<page_id>/received")
    def control_received(page_id: str) -> Any:
        sink = page_of(page_id).elements.get(1)
        if not isinstance(sink, Sink):
            abort(404)
        return jsonify(sink.received)

    @app.post("/control/<page_id>/push")
    def control_push(page_id: str) -> Any:
        sink = page_of(page_id).elements.get(1)
        if not isinstance(sink, Sink):
            abort(404)
        start = request.args.get("start", 0, type=int)
        count = request.args.get("count", 1, type=int)
        pause = request.args.get("pause", 0.0, type=float)
        sink.push(start, count, pause)
        return jsonify({"pushing": count})

    @app.get("/control/<page_id>")
    def control_page(page_id: str) -> Any:
        page = page_of(page_id)
        return jsonify(
            {
                "open": not page.closed,
                "stream_attached": page.stream_attached,
                "last_seq": page.outbox.last_seq,
                "pending": page.pending_calls,
            }
        )

    return app
