"""Scale-out plumbing of the views (Redis broker only).

A request for a page this worker does not own is handled here: POSTs are
forwarded over Redis to the owner, which runs them through the app exactly as
if they had arrived there (same cookie, same checks), and the answer is
replayed; an event stream is served from the page's Redis stream, and the
owner is told when it attaches and detaches, so ``connected()`` hooks run on
the owner in a request context with the user's session.

A forwarded request carries ``environ["athena.forwarded"] = True``: it is
never forwarded again, and only such requests reach the internal
``_attach`` / ``_detach`` endpoints. No HTTP header can set an environ key
without the ``HTTP_`` prefix, so a browser cannot forge the flag.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Generator
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask, Response, request, session
from werkzeug.test import EnvironBuilder, run_wsgi_app

from . import signals
from .errors import (
    AthenaError,
    BodyTooLarge,
    BrokerUnavailable,
    Forbidden,
    PageNotFound,
)
from .limits import read_body
from .protocol import HEARTBEAT_EVENT, dumps, loads, sse_retry
from .state import SESSION_KEY
from .stream import StreamBody, admit_stream, event_stream_response, gone, gone_response

if TYPE_CHECKING:
    from .broker.redis import RedisBroker
    from .broker.redis_outbox import RedisReader
    from .state import AthenaState

logger = logging.getLogger("flask_athena")

#: The environ key that marks a request forwarded by another worker.
FORWARDED = "athena.forwarded"
#: Headers not copied into a forwarded request or its replayed answer.
_SKIP_HEADERS = frozenset({"content-length", "content-type", "host", "transfer-encoding"})
#: How often a stream served by a non-owner checks that the owner lives.
_OWNER_CHECK = 1.0


def is_forwarded() -> bool:
    return bool(request.environ.get(FORWARDED))


def _serialize(path: str, body: bytes) -> dict[str, Any]:
    """The current request as JSON, with ``path`` and ``body`` (base64)."""
    return {
        "method": "POST",
        "base": f"{request.scheme}://{request.host}{request.script_root}",
        "path": path,
        "query": request.query_string.decode("latin-1"),
        "headers": [[k, v] for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS],
        "content_type": request.headers.get("Content-Type"),
        "body": base64.b64encode(body).decode("ascii"),
        "remote": request.remote_addr or "",
    }


def run_forwarded(app: Flask, req: dict[str, Any]) -> dict[str, Any]:
    """Run a forwarded request through ``app`` on the owner; return its answer.

    Called by the broker's inbox greenlet. Middleware around ``app.wsgi_app``
    is skipped on purpose: it already ran on the worker that took the request
    (the scheme and host sent here are the ones it computed).
    """
    builder = EnvironBuilder(
        path=req["path"],
        base_url=req["base"],
        query_string=req["query"],
        method=req["method"],
        headers=[(k, v) for k, v in req["headers"]],
        content_type=req["content_type"],
        data=base64.b64decode(req["body"]),
        environ_overrides={FORWARDED: True, "REMOTE_ADDR": req["remote"] or "127.0.0.1"},
    )
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    app_iter, status, headers = run_wsgi_app(partial(Flask.wsgi_app, app), environ, buffered=True)
    try:
        body = b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()
    return {
        "status": int(status.split(None, 1)[0]),
        "headers": [[k, v] for k, v in headers.items() if k.lower() != "content-length"],
        "body": base64.b64encode(body).decode("ascii"),
    }


def _reply_response(reply: dict[str, Any]) -> Response:
    return Response(
        base64.b64decode(reply["body"]),
        reply["status"],
        headers=[(k, v) for k, v in reply["headers"]],
    )


def _forward_timeout(state: AthenaState) -> float:
    # The owner may hold a retried batch up to 2 x CALL_TIMEOUT (page.receive).
    return state.config.call_timeout * 2 + 5.0


def forward_post(state: AthenaState, broker: RedisBroker, page_id: str, closing: bool) -> Response:
    """Forward this calls/close POST to the page's owner and replay its answer."""
    limit = state.config.max_body_size
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    # Within ATHENA_BODY_TIMEOUT, and a broken body is a 400 here too.
    body = read_body(request.stream, limit, state.config.body_timeout)
    owner = broker.locate(page_id)
    if owner is None or owner == broker.worker_id:
        if closing:
            return Response(status=204)  # closing twice is fine
        raise PageNotFound()
    reply = broker.forward(owner, _serialize(request.path, body), _forward_timeout(state))
    signals.post_forwarded.send(
        state.app, kind="close" if closing else "calls", status=reply["status"]
    )
    return _reply_response(reply)


def _internal(
    broker: RedisBroker, owner: str, page_id: str, what: str, body: Any
) -> dict[str, Any]:
    prefix = request.path.rsplit("/", 2)[0]  # "<prefix>/<page>/events" -> "<prefix>"
    req = _serialize(f"{prefix}/{page_id}/{what}", dumps(body).encode())
    req["content_type"] = "application/json"
    return broker.forward(owner, req, 10.0)


def remote_events(
    state: AthenaState, broker: RedisBroker, page_id: str, last: int, retry_ms: int
) -> Response:
    """Serve the event stream of a page another worker owns, from Redis."""
    owner = broker.locate(page_id)
    if owner is None or owner == broker.worker_id:
        return gone_response("unknown-page", retry_ms)
    key = session.get(SESSION_KEY)
    if not isinstance(key, str):
        raise Forbidden("This page belongs to another session.")
    admit_stream(state, key)
    # Register for wake-ups before the first read, so nothing falls between.
    reader = broker.reader(page_id)
    try:
        reply = _internal(
            broker, owner, page_id, "_attach", {"reader": broker.worker_id, "last": last}
        )
    except PageNotFound:  # the owner died meanwhile
        reader.close()
        return gone_response("owner-gone", retry_ms)
    except AthenaError:
        reader.close()
        raise
    if reply["status"] != 200:
        reader.close()
        if reply["status"] == 404:
            return gone_response("unknown-page", retry_ms)
        return _reply_response(reply)
    generation = int(loads(base64.b64decode(reply["body"]))["gen"])
    # From here on the owner counts the stream as attached: every way out
    # goes through stream.close(), which tells it.
    state.session_streams[key] = state.session_streams.get(key, 0) + 1
    stream = RemoteEventStream(state, broker, reader, owner, key, generation)
    try:
        frames = broker.read_stream(page_id, last, None)
        if frames is None:
            stream.close()
            return gone_response("outbox-trimmed", retry_ms)
        # Only now is ``last`` known to be a message the page sent: a
        # Last-Event-ID beyond the newest one trimmed first would forget
        # messages the browser never had (its replay from 0 found nothing
        # and no ``gone``: a silent loss).
        if last:
            broker.trim(page_id, last)
    except AthenaError:
        stream.close()
        raise
    stream.start(last, frames, retry_ms)
    return event_stream_response(stream)


class RemoteEventStream(StreamBody):
    """The body of an event stream served by a worker that does not own the page.

    Like :class:`~flask_athena.transport.EventStream`, but reads the page's
    Redis stream and learns from the page's ``gen`` field that a newer
    stream replaced it, and from the owner's liveness key that the page is
    gone. :meth:`close` tells the owner (best effort, in a greenlet). As a
    slow consumer it is cut on the time bound only (this worker does not
    know the page's newest seq); past the outbox bound it gets ``gone``.
    """

    __slots__ = ("_broker", "_reader", "_owner", "_generation", "_detach_request")

    def __init__(
        self,
        state: AthenaState,
        broker: RedisBroker,
        reader: RedisReader,
        owner: str,
        session_key: str,
        generation: int,
    ) -> None:
        super().__init__(state, session_key)
        self._broker = broker
        self._reader = reader
        self._owner = owner
        self._generation = generation
        # Built now, in the request context: close() runs without one.
        prefix = request.path.rsplit("/", 2)[0]
        self._detach_request = _serialize(
            f"{prefix}/{reader.page_id}/_detach", dumps({"gen": generation}).encode()
        )
        self._detach_request["content_type"] = "application/json"

    def start(self, cursor: int, frames: list[bytes], retry_ms: int) -> None:
        self._body = self._run(cursor, frames, retry_ms)

    def _run(self, cursor: int, frames: list[bytes], retry_ms: int) -> Generator[bytes, None, None]:
        self.count_sent(len(frames), replayed=cursor > 0)
        cursor += len(frames)
        self.sent = cursor
        yield sse_retry(retry_ms) + b"".join(frames)
        heartbeat = self._state.config.heartbeat
        broker, reader = self._broker, self._reader
        last_write = last_poll = monotonic()
        while True:
            woke = reader.wait(min(heartbeat, _OWNER_CHECK))
            try:
                fresh: list[bytes] | None = []
                # Redis is read when woken, and once a heartbeat in case a
                # wake-up was lost; otherwise only the owner's liveness is
                # checked (cached per worker: thousands of idle streams cost
                # one Redis call a second, not one each).
                if woke or monotonic() - last_poll >= heartbeat:
                    last_poll = monotonic()
                    generation, fresh = reader.poll(cursor)
                    if generation is None:
                        yield gone(self._state.app, "closed")
                        return
                    if generation > self._generation:
                        return  # replaced by a newer stream of the same page
                    if fresh is None:
                        yield gone(self._state.app, "outbox-trimmed")
                        return
                if not woke and not fresh and not broker.alive(self._owner):
                    broker.locate(self._reader.page_id)  # deletes the dead owner's page
                    yield gone(self._state.app, "owner-gone")
                    return
            except BrokerUnavailable as exc:
                # End the stream: the browser reconnects with backoff and
                # replays from Last-Event-ID once Redis is back.
                logger.warning("flask_athena: stream ended: %s", exc.message)
                return
            if fresh:
                cursor += len(fresh)
                self.sent = cursor
                self.count_sent(len(fresh))
                last_write = monotonic()
                yield b"".join(fresh)
            elif monotonic() - last_write >= heartbeat:
                last_write = monotonic()
                yield HEARTBEAT_EVENT

    def _release(self) -> None:
        self._reader.close()
        gevent.spawn(self._tell_owner, self._detach_request)

    def _tell_owner(self, req: dict[str, Any]) -> None:
        try:
            self._broker.forward(self._owner, req, 10.0)
        except AthenaError as exc:  # the owner may be gone: its reaper cleans up
            logger.info("flask_athena: detach not delivered: %s", exc.message)
