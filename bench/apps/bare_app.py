"""bare: the floor of the calls path on this stack.

A plain WSGI callable (no Flask, no routing, no sessions) on the same
``gunicorn -k gevent -w 1`` worker as the other targets. It answers
``POST /call`` with a JSON body ``{"method": "echo", "args": [value]}`` by
``{"ok": value}``, as the raw app's ``/call`` does, and ``GET /healthz``.
Whatever a library adds on top of this is what one browser → server call
costs it beyond gunicorn's HTTP parsing and writing (figure F4). It has no
event stream: the other figures do not apply to it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: Bodies larger than this are refused (the calls of the benchmark are tiny).
MAX_BODY = 1 << 20


def _answer(start_response: StartResponse, status: str, body: bytes) -> Iterable[bytes]:
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    method = environ.get("REQUEST_METHOD", "")
    if path == "/call" and method == "POST":
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or int(length) > MAX_BODY:
            return _answer(start_response, "413 Payload Too Large", b'{"error":"body"}')
        try:
            body = json.loads(environ["wsgi.input"].read(int(length)))
            value = body["args"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            return _answer(start_response, "400 Bad Request", b'{"error":"bad call"}')
        if body.get("method") != "echo":
            return _answer(start_response, "404 Not Found", b'{"error":"no such method"}')
        reply = json.dumps({"ok": value}, separators=(",", ":")).encode()
        return _answer(start_response, "200 OK", reply)
    if path == "/healthz":
        return _answer(start_response, "200 OK", b'"ok"')
    return _answer(start_response, "404 Not Found", b'{"error":"not found"}')
