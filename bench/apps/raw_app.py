"""raw: the floor for this stack.

A minimal Flask app: one SSE generator per client fed by a gevent ``Queue``,
JSON POST endpoints for calls and results, under ``gunicorn -k gevent -w 1``.
It has what the figures need and nothing else: no sessions, no tokens, no
ordering or exactly-once guarantees. The only extra is a bounded history per
client (``deque(maxlen=1000)``) so that a reconnect with ``Last-Event-ID``
can be replayed (figure F6).
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Iterator
from typing import Any

from flask import Flask, Response, jsonify, request
from gevent.event import AsyncResult
from gevent.queue import Empty, Queue

from .control import SAYER, TEXT, install, no_context

HEARTBEAT = 15.0
HISTORY = 1000

app = Flask(__name__)


class Client:
    __slots__ = ("seq", "history", "queue")

    def __init__(self) -> None:
        self.seq = 0
        self.history: deque[tuple[int, bytes]] = deque(maxlen=HISTORY)
        self.queue: Queue | None = None  # the open stream's queue, if any

    def send(self, data: str) -> None:
        self.seq += 1
        frame = f"id: {self.seq}\ndata: {data}\n\n".encode()
        self.history.append((self.seq, frame))
        if self.queue is not None:
            self.queue.put(frame)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


clients: dict[str, Client] = {}
pending: dict[int, AsyncResult] = {}
next_call = [0]


@app.post("/open")
def open_client() -> Any:
    cid = secrets.token_urlsafe(12)
    clients[cid] = Client()
    return jsonify(id=cid)


@app.get("/events/<cid>")
def events(cid: str) -> Any:
    client = clients.get(cid)
    if client is None:
        return Response("unknown client", 404)
    last = int(request.headers.get("Last-Event-ID") or 0)
    # Replay and attach with no yield in between, so nothing is missed or doubled.
    backlog = [frame for seq, frame in client.history if seq > last]
    if client.queue is not None:
        client.queue.put(None)  # ends the older stream
    queue = client.queue = Queue()

    def stream() -> Iterator[bytes]:
        try:
            yield b"retry: 1000\n\n" + b"".join(backlog)
            while True:
                try:
                    frame = queue.get(timeout=HEARTBEAT)
                except Empty:
                    yield b": heartbeat\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            if client.queue is queue:
                client.queue = None

    return Response(stream(), mimetype="text/event-stream", direct_passthrough=True)


@app.post("/call")
def call() -> Any:
    body = request.get_json()
    if body.get("method") != "echo":
        return jsonify(error="no such method"), 404
    return jsonify(ok=body["args"][0])


@app.post("/results/<cid>")
def results(cid: str) -> Any:
    for result in request.get_json()["results"]:
        waiter = pending.pop(result["call"], None)
        if waiter is not None:
            waiter.set(result.get("ok"))
    return jsonify(ok=True)


class RawAdapter:
    def connected(self) -> list[Any]:
        return [c for c in clients.values() if c.queue is not None]

    def broadcast(self, k: int) -> int:
        data = dumps({"method": "hear", "args": [k, SAYER, TEXT]})
        targets = self.connected()
        for client in targets:
            client.send(data)
        return len(targets)

    def push_to(self, client_id: str, start: int, count: int) -> int | None:
        client = clients.get(client_id)
        if client is None:
            return None
        for k in range(start, start + count):
            client.send(dumps({"method": "hear", "args": [k, SAYER, TEXT]}))
        return count

    def call(self, handle: Any, k: int, timeout: float) -> Any:
        next_call[0] += 1
        call_id = next_call[0]
        waiter = pending[call_id] = AsyncResult()
        handle.send(dumps({"call": call_id, "method": "ping", "args": [k]}))
        try:
            return waiter.get(timeout=timeout)
        finally:
            pending.pop(call_id, None)

    def context(self) -> Any:
        return no_context()

    def held(self) -> int:
        return len(clients)


install(app, RawAdapter())
