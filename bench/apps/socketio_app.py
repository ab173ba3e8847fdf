"""Flask-SocketIO: what Flask users pick today for live pages.

``async_mode="gevent"`` under gunicorn's gevent-websocket worker
(``-k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1``); clients
connect straight over WebSocket (Engine.IO 4, no long-polling first).
Flask-SocketIO has no replay: a message emitted while a client is away is
lost, so figure F6 is reported as not supported.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask_socketio import SocketIO  # type: ignore[import-untyped]

from .control import SAYER, TEXT, install, no_context

app = Flask(__name__)
app.config["SECRET_KEY"] = "bench"
socketio = SocketIO(app, async_mode="gevent")
sids: dict[str, None] = {}


@socketio.on("connect")  # type: ignore[untyped-decorator]
def connect() -> None:
    sids[request.sid] = None  # type: ignore[attr-defined]


@socketio.on("disconnect")  # type: ignore[untyped-decorator]
def disconnect(*args: Any) -> None:
    sids.pop(request.sid, None)  # type: ignore[attr-defined]


@socketio.on("echo")  # type: ignore[untyped-decorator]
def echo(value: Any) -> Any:
    return value


class SocketIOAdapter:
    def connected(self) -> list[Any]:
        return list(sids)

    def broadcast(self, k: int) -> int:
        socketio.emit("hear", [k, SAYER, TEXT])
        return len(sids)

    def push_to(self, client_id: str, start: int, count: int) -> int | None:
        return -1  # no replay in Flask-SocketIO

    def call(self, handle: Any, k: int, timeout: float) -> Any:
        return socketio.call("ping", k, to=handle, timeout=timeout)

    def context(self) -> Any:
        return no_context()

    def held(self) -> int:
        return len(sids)


install(app, SocketIOAdapter())
