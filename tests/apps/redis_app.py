"""The app the Redis scale-out tests run: ``tests.apps.redis_app:app``.

Settings come from the environment (``ATHENA_*``, ``SECRET_KEY``), so several
gunicorn processes can share one Redis and one session secret. Every answer
says which worker process produced it: the page embeds ``os.getpid()`` (the
owner), ``/whoami`` and the exposed ``whoami`` return it, so a test can prove
that a request was served, or forwarded, across workers.
"""

from __future__ import annotations

import os
from dataclasses import asdict

import gevent
from flask import Flask, jsonify, render_template_string

from flask_athena import Athena, LiveElement, expose
from flask_athena.config import config_from_env

ROOM = "room"


app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "flask-athena-redis-tests")
app.config.update(config_from_env())
athena = Athena(app)

PAGE = """<!doctype html>
<html><head><title>redis</title>{{ page.head() }}</head>
<body data-pid="{{ pid }}">{{ probe }}</body></html>"""


class Probe(LiveElement):
    """Joins the room when its stream attaches; counts its calls."""

    js_class = "Probe.Probe"

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def render(self) -> str:
        return ""

    def connected(self) -> None:
        self.join(ROOM)

    @expose
    def whoami(self) -> int:
        return os.getpid()

    @expose
    def bump(self) -> int:
        """Exactly-once probe: the number of times this method ran on this page."""
        self.calls += 1
        return self.calls

    @expose
    def bump_slowly(self, seconds: float) -> int:
        """``bump`` that takes ``seconds``: a retry arrives while it runs."""
        gevent.sleep(min(seconds, 5.0))
        return self.bump()

    @expose
    def shout(self, text: str) -> int:
        return athena.broadcast(ROOM, "hear", os.getpid(), text)

    @expose
    def flood(self, count: int, size: int) -> int:
        """Publish ``count`` ``take(n, filler)`` calls of ``size`` bytes at once (bounded)."""
        filler = "x" * min(size, 2_000_000)
        for n in range(min(count, 100)):
            self.call_remote("take", n, filler)
        return os.getpid()

    @expose
    def ping_back(self, text: str) -> int:
        """A direct server → browser call of this page only."""
        self.call_remote("pong", text)
        return os.getpid()

    @expose
    def poison(self) -> int:
        """Push unencodable data (a lone surrogate) through the broker's public paths.

        A broadcast whose arguments hold one reaches every worker's members;
        a stream write for a page id Redis cannot take reaches this worker's
        writer greenlet. Neither may stop any loop that serves the worker.
        """
        broker = athena.state().broker
        broker.broadcast(ROOM, "hear", '[0, "\ud800"]')  # a real surrogate, not an escape
        try:
            outbox = broker.create_outbox("\ud800", 10)
            # Served by another worker: its writes go to Redis (the mirror).
            outbox.served_by("another-worker")
            outbox.publish('"x"')
        except UnicodeEncodeError:
            pass  # refused to the caller: fine too, as long as the loops live
        return os.getpid()


@app.get("/")
def index() -> str:
    page = athena.page()
    probe = page.add(Probe())
    return render_template_string(PAGE, page=page, probe=probe, pid=os.getpid())


@app.get("/whoami")
def whoami() -> str:
    return str(os.getpid())


@app.get("/healthz")
def healthz() -> str:
    return "ok"


@app.get("/loops")
def loops() -> object:
    """This worker's pid and the health of its broker loops (tests read it)."""
    health = getattr(athena.state().broker, "health", lambda: [])()
    return jsonify(pid=os.getpid(), loops=[asdict(h) for h in health])
