"""The app of the Redis presence tests: ``tests.apps.presence_app:app``.

Settings come from the environment (``ATHENA_*``, ``SECRET_KEY``), like
``tests.apps.redis_app``. Each page holds one ``Member``: it joins the room
when its stream attaches, tracks itself on ``enter(name, tab)`` and sends its
browser the snapshot (``presence_state``) and every diff (``presence_diff``),
as a widget would. The page embeds the pid of the worker that owns it.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, render_template_string

from flask_athena import Athena, LiveElement, expose
from flask_athena.config import config_from_env

ROOM = "room"

app = Flask(__name__)
app.config["SECRET_KEY"] = os.environ.get("SECRET_KEY", "flask-athena-presence-tests")
app.config.update(config_from_env())
athena = Athena(app)

PAGE = """<!doctype html>
<html><head><title>presence</title>{{ page.head() }}</head>
<body data-pid="{{ pid }}">{{ member }}</body></html>"""


class Member(LiveElement):
    js_class = "Member.Member"

    def render(self) -> str:
        return ""

    def connected(self) -> None:
        self.join(ROOM)

    @expose
    def enter(self, name: str, tab: int = 0) -> int:
        athena.presence.track(self, ROOM, name, {"tab": tab, "pid": os.getpid()})
        self.call_remote("presence_state", athena.presence.list(ROOM))
        return os.getpid()

    @expose
    def exit(self) -> None:
        athena.presence.untrack(self, ROOM)

    @expose
    def listed(self) -> dict[str, int]:
        """This worker's view: key -> number of metas."""
        return {key: len(metas) for key, metas in athena.presence.list(ROOM).items()}

    def presence_changed(self, topic: str, joins: Any, leaves: Any) -> None:
        self.call_remote("presence_diff", joins, leaves)


@app.get("/")
def index() -> str:
    page = athena.page()
    member = page.add(Member())
    return render_template_string(PAGE, page=page, member=member, pid=os.getpid())


@app.get("/whoami")
def whoami() -> str:
    return str(os.getpid())


@app.get("/healthz")
def healthz() -> str:
    return "ok"
