"""The flask_athena example app: Athena's chat tutorial and two more live pages.

Run it with ``python -m example_app`` (see README.rst).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, render_template

from flask_athena.config import config_from_env

from .chat import ChatterBox
from .extension import athena
from .live import Clock, ProgressJob
from .todo import TodoList


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the example app; ``ATHENA_*`` settings may also come from the environment."""
    app = Flask(__name__)
    app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY") or os.urandom(24).hex()
    app.config.update(config_from_env())
    app.config.update(config or {})
    athena.init_app(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.get("/chat")
    def chat() -> str:
        page = athena.page()
        box = page.add(ChatterBox())
        return render_template("chat.html", page=page, box=box)

    @app.get("/live")
    def live() -> str:
        page = athena.page()
        clock = page.add(Clock())
        job = page.add(ProgressJob())
        return render_template("live.html", page=page, clock=clock, job=job)

    @app.get("/todo")
    def todo() -> str:
        page = athena.page()
        todos = page.add(TodoList(["Read the Athena tutorial", "Port it to Flask"]))
        return render_template("todo.html", page=page, todos=todos)

    @app.get("/healthz")
    def healthz() -> tuple[str, int]:
        return "ok", 200

    return app
