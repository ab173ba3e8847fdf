"""flask_athena: the embedded (in-memory) broker, or Redis with one or more workers.

Each page is what a browser would get: ``GET /`` renders a page with one
``Box`` widget (its own session), the client reads the ``athena-config``
meta tag and speaks ``docs/protocol.rst``: the event stream, and POSTs with
the page token, session cookie and same-origin ``Origin``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, render_template_string

from flask_athena import Athena, LiveElement, expose
from flask_athena.protocol import call_message, dumps

from .control import SAYER, TEXT, install

app = Flask(__name__)
app.config["SECRET_KEY"] = "bench"
# The load client holds up to 100,000 pages and streams (figure F1) from a
# few loopback addresses: the per-client limits (DESIGN §11) would refuse it
# as the flood it is, and the per-worker ones (20,000 by default) cap F1.
app.config["ATHENA_MAX_PAGES_PER_CLIENT"] = 200_000
app.config["ATHENA_MAX_STREAMS_PER_CLIENT"] = 200_000
app.config["ATHENA_MAX_PAGES"] = 200_000
app.config["ATHENA_MAX_STREAMS"] = 200_000
if os.environ.get("ATHENA_BROKER_URL"):  # the Redis targets (bench/targets.py)
    app.config["ATHENA_BROKER_URL"] = os.environ["ATHENA_BROKER_URL"]
athena = Athena(app)

PAGE = """<!doctype html>
<html><head>{{ page.head() }}</head>
<body>{{ box }}</body></html>"""


class Box(LiveElement):
    js_class = "Bench.Box"

    def connected(self) -> None:
        self.join("lobby")

    def render(self) -> str:
        return "<ul></ul>"

    @expose
    def echo(self, value: Any) -> Any:
        return value


@app.get("/")
def index() -> str:
    page = athena.page()
    box = page.add(Box())
    return render_template_string(PAGE, page=page, box=box)


class AthenaAdapter:
    def connected(self) -> list[Any]:
        state = athena.state(app)
        return [p.elements[1] for p in list(state.pages.values()) if p.stream_attached]

    def broadcast(self, k: int) -> int:
        return athena.broadcast("lobby", "hear", k, SAYER, TEXT)

    def push_to(self, client_id: str, start: int, count: int) -> int | None:
        page = athena.state(app).pages.get(client_id)
        if page is None:
            return None  # another worker owns it (Redis targets)
        box = page.elements[1]
        # What a broadcast does for each element it reaches, for this one
        # element: queued in the page's outbox in order, at once. (A topic
        # joined just for this and left right after would miss the last
        # messages with Redis, whose broadcasts are delivered asynchronously.)
        for k in range(start, start + count):
            page.outbox.publish(call_message(None, box.id, "hear", dumps([k, SAYER, TEXT])))
        return count

    def call(self, handle: Any, k: int, timeout: float) -> Any:
        return handle.call_remote("ping", k).get(timeout=timeout)

    def context(self) -> Any:
        return app.app_context()

    def held(self) -> int:
        return len(athena.state(app).pages)


# With Redis, /bench/s2c, /bench/push_to and /bench/stats act on the pages of
# every worker (bench/apps/cluster.py); broadcasts reach every worker anyway.
install(app, AthenaAdapter(), cluster_url=os.environ.get("ATHENA_BROKER_URL"))
