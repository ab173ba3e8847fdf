"""The app of the operations tests: metrics, the inspector and the CLI on Redis.

``tests.apps.ops_app:create_app()`` reads its settings from the environment
(``ATHENA_*``, ``SECRET_KEY``, ``INSPECTOR_KEY``). Pages embed the pid of the
worker that rendered them (``data-pid``), like ``tests.apps.redis_app``.
``/metrics`` is prometheus_client's exposition (every worker's values when
``PROMETHEUS_MULTIPROC_DIR`` is set); the inspector is served to requests
carrying ``X-Inspector-Key: $INSPECTOR_KEY``.
"""

from __future__ import annotations

import hmac
import os

from flask import Flask, render_template_string, request

from flask_athena import Athena, LiveElement, expose
from flask_athena.config import config_from_env
from flask_athena.inspector import Inspector
from flask_athena.metrics import metrics_view

PAGE = """<!doctype html>
<html><head><title>ops</title>{{ page.head() }}</head>
<body data-pid="{{ pid }}">{{ probe }}</body></html>"""


class Probe(LiveElement):
    """Joins ``room`` when connected; ``whoami`` says which worker runs it."""

    js_class = "Probe.Probe"

    def connected(self) -> None:
        self.join("room")

    @expose
    def whoami(self) -> int:
        return os.getpid()


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "flask-athena-ops-tests")
    app.config.update(config_from_env())
    athena = Athena(app)
    key = os.environ.get("INSPECTOR_KEY", "")

    def authorize() -> bool:
        given = request.headers.get("X-Inspector-Key", "")
        return bool(key) and hmac.compare_digest(given, key)

    Inspector(app, authorize=authorize)
    app.add_url_rule("/metrics", view_func=metrics_view)

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

    return app
