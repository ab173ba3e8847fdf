"""Scale-out plumbing of the views (a broker spanning workers, through its
:class:`~flask_athena.broker.WorkerLink`).

A request for a page this worker does not own is handled here, in two halves:

- **Where the request arrived** (any worker): every check that needs no page
  runs first, cheaply (Origin, content type, size, the batch's JSON shape,
  the token's and the session's shape); only then is the owner looked up
  and the request forwarded through the broker as data: the parsed batch, the
  token, and what the owner needs to open the user's session (the cookie,
  host, scheme, path). An event stream is served from the page's shared
  outbox, and the owner is told when it attaches and detaches.
- **On the owner** (:func:`serve_forwarded`, run by the broker's inbox
  loop): the page, the session binding and the token are checked, then the
  batch goes to :func:`~flask_athena.endpoint.answer_calls`, the one
  function the calls view uses too. It runs in a request context made for
  the user's session (no request is rebuilt or dispatched through Flask:
  no routing, no body), so exposed methods and ``connected()`` hooks see
  ``session``, ``g`` and ``url_for`` as on the worker that took the request;
  session changes come back as ``Set-Cookie`` headers.

The answer travels back as ``{"status", "body", "cookies"}`` and is replayed
to the browser. A forwarded request is never forwarded again: the owner
answers from its own pages only.
"""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from flask import Response, request, session

from . import signals
from .endpoint import (
    JSON_MIMETYPE,
    TOKEN_HEADER,
    answer_calls,
    check_origin,
    check_session,
    checked_page,
    find_page,
    read_json_body,
)
from .errors import (
    AthenaError,
    BadRequest,
    BrokerUnavailable,
    Forbidden,
    PageNotFound,
)
from .protocol import HEARTBEAT_EVENT, JSONValue, dumps, loads, parse_batch, sse_retry
from .state import SESSION_KEY
from .stream import StreamBody, admit_stream, chunks, event_stream_response, gone, gone_response

if TYPE_CHECKING:
    from .broker import Forwarded, RemoteReader, WorkerLink
    from .state import AthenaState

logger = logging.getLogger("flask_athena")

#: How often a stream served by a non-owner checks that the owner lives.
_OWNER_CHECK = 1.0
#: Seconds an owner's ``attach`` waits for the page's outbox to be readable
#: by the reader's worker (the mirror written), then answers 503.
_MIRROR_WAIT = 5.0
#: What a page token looks like (``secrets.token_urlsafe``): checked before
#: forwarding, so a junk header costs no broker round trip.
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")


# -- where the request arrived --------------------------------------------------


def _context() -> dict[str, JSONValue]:
    """What the owner needs to open this request's session and build URLs."""
    return {
        "scheme": request.scheme,
        "host": request.host,
        "root": request.script_root,
        "path": request.path,
        "cookie": request.headers.get("Cookie", ""),
        "remote": request.remote_addr or "",
    }


def _session_key() -> str:
    key = session.get(SESSION_KEY)
    if not isinstance(key, str):
        raise Forbidden("This page belongs to another session.")
    return key


def _check_token_shape(token: object) -> str:
    if not isinstance(token, str) or not _TOKEN_SHAPE.fullmatch(token):
        raise Forbidden("Missing or wrong page token.")
    return token


def _reply_parts(reply: Forwarded) -> tuple[int, str, list[str]]:
    """``(status, body, Set-Cookie values)`` of an owner's reply, checked."""
    status, body, cookies = reply.get("status"), reply.get("body"), reply.get("cookies")
    if (
        not isinstance(status, int)
        or not isinstance(body, str)
        or not isinstance(cookies, list)
        or not all(isinstance(cookie, str) for cookie in cookies)
    ):
        raise BrokerUnavailable("The worker that owns this page sent a malformed reply.")
    return status, body, [str(cookie) for cookie in cookies]


def _attach_parts(body: str) -> tuple[int, int]:
    """``(gen, last)`` of an owner's ``attach`` answer, checked."""
    try:
        answer = loads(body)
    except BadRequest:
        answer = None
    gen = answer.get("gen") if isinstance(answer, dict) else None
    last = answer.get("last") if isinstance(answer, dict) else None
    if (
        not isinstance(gen, int)
        or isinstance(gen, bool)
        or not isinstance(last, int)
        or isinstance(last, bool)
        or last < 0
    ):
        raise BrokerUnavailable("The worker that owns this page sent a malformed reply.")
    return gen, last


def _reply_response(reply: Forwarded) -> Response:
    status, body, cookies = _reply_parts(reply)
    response = Response(body or None, status, mimetype=JSON_MIMETYPE)
    for cookie in cookies:
        response.headers.add("Set-Cookie", cookie)
    if cookies:
        response.vary.add("Cookie")
    return response


def _forward_timeout(state: AthenaState) -> float:
    # The owner may hold a retried batch up to 2 x CALL_TIMEOUT (page.receive).
    return state.config.call_timeout * 2 + 5.0


def forward_calls(state: AthenaState, broker: WorkerLink, page_id: str) -> Response:
    """Check this calls POST as far as possible here, then have the owner answer it.

    Blocks the request's greenlet until the owner answers (bounded by
    ``2 × ATHENA_CALL_TIMEOUT + 5`` seconds).
    """
    # The cheap checks first: a hostile request costs no broker round trip.
    check_origin(state, request)
    body = read_json_body(state, request)
    token = _check_token_shape(request.headers.get(TOKEN_HEADER))
    _session_key()
    parse_batch(body)  # the shape (400 here); the owner parses the value again
    batch: JSONValue = loads(body)
    owner = broker.locate(page_id)
    if owner is None or owner == broker.worker_id:
        raise PageNotFound()
    req: Forwarded = {
        "kind": "calls",
        "page": page_id,
        "token": token,
        "batch": batch,
        "ctx": _context(),
    }
    reply = broker.forward(owner, req, _forward_timeout(state))
    signals.post_forwarded.send(state.app, kind="calls", status=reply["status"])
    return _reply_response(reply)


def forward_close(state: AthenaState, broker: WorkerLink, page_id: str) -> Response:
    """Check this close POST (beacon) as far as possible here, then have the owner close."""
    check_origin(state, request)
    body = loads(read_json_body(state, request))
    token = _check_token_shape(body.get("token") if isinstance(body, dict) else None)
    _session_key()
    owner = broker.locate(page_id)
    if owner is None or owner == broker.worker_id:
        return Response(status=204)  # closing twice is fine
    req: Forwarded = {"kind": "close", "page": page_id, "token": token, "ctx": _context()}
    reply = broker.forward(owner, req, _forward_timeout(state))
    signals.post_forwarded.send(state.app, kind="close", status=reply["status"])
    return _reply_response(reply)


class ClusterPages:
    """The :class:`~flask_athena.broker.RemotePages` of a broker spanning workers:
    ``AthenaState.remote`` when the broker has a link."""

    def __init__(self, state: AthenaState, broker: WorkerLink) -> None:
        self._state = state
        self._broker = broker

    def calls(self, page_id: str) -> Response:
        """See :meth:`~flask_athena.broker.RemotePages.calls` (:func:`forward_calls`)."""
        return forward_calls(self._state, self._broker, page_id)

    def close(self, page_id: str) -> Response:
        """See :meth:`~flask_athena.broker.RemotePages.close` (:func:`forward_close`)."""
        return forward_close(self._state, self._broker, page_id)

    def events(self, page_id: str, last: int, retry_ms: int, ack: bool = True) -> Response:
        """See :meth:`~flask_athena.broker.RemotePages.events` (:func:`remote_events`)."""
        return remote_events(self._state, self._broker, page_id, last, retry_ms, ack)


# -- on the owner ------------------------------------------------------------------


@contextmanager
def _user_context(state: AthenaState, ctx: dict[str, str]) -> Iterator[list[str]]:
    """A request context holding the user's session (opened from their cookie).

    Yields a list that receives the ``Set-Cookie`` values of a changed
    session when the block ends. Only what Flask needs to open the session
    and build URLs is set: there is no body, and nothing is dispatched.
    """
    app = state.app
    host, _, port = ctx["host"].partition(":")
    scheme = ctx["scheme"]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": ctx["root"],
        "PATH_INFO": ctx["path"][len(ctx["root"]) :],
        "QUERY_STRING": "",
        "SERVER_NAME": host,
        "SERVER_PORT": port or ("443" if scheme == "https" else "80"),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": ctx["host"],
        "REMOTE_ADDR": ctx["remote"] or "127.0.0.1",
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if ctx["cookie"]:
        environ["HTTP_COOKIE"] = ctx["cookie"]
    cookies: list[str] = []
    with app.request_context(environ) as request_context:
        yield cookies
        user_session = request_context.session
        if user_session is not None and not app.session_interface.is_null_session(user_session):
            response = app.response_class()
            app.session_interface.save_session(app, user_session, response)
            cookies.extend(response.headers.getlist("Set-Cookie"))


def serve_forwarded(state: AthenaState, req: Forwarded) -> Forwarded:
    """Answer a request another worker forwarded: ``{"status", "body", "cookies"}``.

    Runs in a greenlet of the broker's inbox pool on the owner; blocks while
    the batch's exposed methods run. Errors of the request (unknown page,
    foreign session, bad token, bad batch) are answers, not exceptions.
    """
    try:
        kind, page_id, ctx = req["kind"], req["page"], req["ctx"]
        if not isinstance(kind, str) or not isinstance(page_id, str) or not isinstance(ctx, dict):
            raise BadRequest()
        fields = {key: value for key, value in ctx.items() if isinstance(value, str)}
        if len(fields) != len(ctx):
            raise BadRequest()
        with _user_context(state, fields) as cookies:
            status, body = _serve(state, kind, page_id, req)
        set_cookies: list[JSONValue] = list(cookies)
        return {"status": status, "body": body, "cookies": set_cookies}
    except AthenaError as exc:
        return {"status": exc.status_code, "body": dumps({"error": exc.to_json()}), "cookies": []}
    except (KeyError, TypeError) as exc:
        raise BadRequest("Malformed forwarded request.") from exc


def _serve(state: AthenaState, kind: str, page_id: str, req: Forwarded) -> tuple[int, str]:
    if kind == "calls":
        page = checked_page(state, page_id, session.get(SESSION_KEY), req["token"])
        batch = parse_batch(dumps(req["batch"]))
        return answer_calls(state, page, batch)
    if kind == "close":
        closing = state.pages.get(page_id)
        if closing is not None:
            checked_page(state, page_id, session.get(SESSION_KEY), req["token"])
            closing.close("closed")
        return 204, ""
    if kind == "attach":
        page = find_page(state, page_id)
        check_session(page, session)
        reader = req["reader"]
        if not isinstance(reader, str):
            raise BadRequest()
        generation = page.attach_stream()
        # Starts the Redis copy of the outbox (the mirror), queued with no
        # yield; the reader reads it only once it is written.
        page.outbox.served_by(reader)
        last = page.outbox.last_seq
        link = state.broker.link
        if link is not None:
            try:
                link.sync(_MIRROR_WAIT)
            except BrokerUnavailable:
                page.outbox.served_by(None)
                page.detach_stream(generation)
                raise
        return 200, dumps({"gen": generation, "last": last})
    if kind == "detach":
        detached = state.pages.get(page_id)
        gen = req["gen"]
        if detached is not None and isinstance(gen, int):
            if gen == detached.stream_generation:
                detached.outbox.served_by(None)
            detached.detach_stream(gen)
        return 204, ""
    raise BadRequest("Unknown forwarded request.")


# -- event streams of pages another worker owns --------------------------------------


def remote_events(
    state: AthenaState,
    broker: WorkerLink,
    page_id: str,
    last: int,
    retry_ms: int,
    ack: bool = True,
) -> Response:
    """Serve the event stream of a page another worker owns, from the broker.

    ``ack``: ``last`` acknowledges (see :meth:`RemotePages.events
    <flask_athena.broker.RemotePages.events>`); without it nothing is trimmed
    and the stream starts from the page's acknowledged seq if that is later.
    """
    owner = broker.locate(page_id)
    if owner is None or owner == broker.worker_id:
        return gone_response("unknown-page", retry_ms)
    key = _session_key()
    admit_stream(state, key)
    # Register for wake-ups before the first read, so nothing falls between.
    reader = broker.reader(page_id)
    ctx = _context()
    try:
        reply = broker.forward(
            owner,
            {"kind": "attach", "page": page_id, "reader": broker.worker_id, "ctx": ctx},
            10.0,
        )
    except PageNotFound:  # the owner died meanwhile
        reader.close()
        return gone_response("owner-gone", retry_ms)
    except AthenaError:
        reader.close()
        raise
    try:
        status, body, _ = _reply_parts(reply)
    except AthenaError:
        reader.close()
        raise
    if status != 200:
        reader.close()
        if status == 404:
            return gone_response("unknown-page", retry_ms)
        return _reply_response(reply)
    try:
        generation, newest = _attach_parts(body)
    except AthenaError:
        reader.close()
        raise
    # From here on the owner counts the stream as attached: every way out
    # goes through stream.close(), which tells it.
    state.session_streams[key] = state.session_streams.get(key, 0) + 1
    stream = RemoteEventStream(state, broker, reader, owner, key, generation, ctx)
    try:
        if not ack:
            # A shared stream's leader may ask from before what the page's
            # tab acknowledged (an attach sent before relays that followed):
            # those messages are gone from Redis, and the tab has them.
            last = max(last, broker.acked(page_id))
        # ``newest``: the owner's last seq when the mirror was queued
        # (everything up to it is in Redis now), so a Last-Event-ID beyond
        # it is refused even when the stream holds nothing.
        frames = broker.read_stream(page_id, last, newest)
        if frames is None:
            stream.close()
            return gone_response("outbox-trimmed", retry_ms)
        # Only now is ``last`` known to be a message the page sent: a
        # Last-Event-ID beyond the newest one trimmed first would forget
        # messages the browser never had (its replay from 0 found nothing
        # and no ``gone``: a silent loss).
        if last and ack:
            broker.trim(page_id, last)
    except AthenaError:
        stream.close()
        raise
    stream.start(last, frames, retry_ms)
    return event_stream_response(stream)


class RemoteEventStream(StreamBody):
    """The body of an event stream served by a worker that does not own the page.

    Like :class:`~flask_athena.transport.EventStream`, but reads the page's
    shared outbox and learns from the page's ``gen`` field that a newer
    stream replaced it, and from the owner's liveness key that the page is
    gone. :meth:`close` tells the owner (best effort, in a greenlet). As a
    slow consumer it is cut on the time bound only (this worker does not
    know the page's newest seq); past the outbox bound it gets ``gone``.
    """

    __slots__ = ("_broker", "_reader", "_owner", "_generation", "_detach_request")

    def __init__(
        self,
        state: AthenaState,
        broker: WorkerLink,
        reader: RemoteReader,
        owner: str,
        session_key: str,
        generation: int,
        ctx: dict[str, JSONValue],
    ) -> None:
        super().__init__(state, session_key)
        self._broker = broker
        self._reader = reader
        self._owner = owner
        self._generation = generation
        # Built now, from the request's context: close() runs without one.
        self._detach_request: Forwarded = {
            "kind": "detach",
            "page": reader.page_id,
            "gen": generation,
            "ctx": ctx,
        }

    def start(self, cursor: int, frames: list[bytes], retry_ms: int) -> None:
        """Set the body: ``frames`` (the replay after ``cursor``) first, then live messages."""
        self._body = self._run(cursor, frames, retry_ms)

    def _run(self, cursor: int, frames: list[bytes], retry_ms: int) -> Generator[bytes, None, None]:
        self.count_sent(len(frames), replayed=cursor > 0)
        cursor += len(frames)
        self.sent = cursor
        yield from chunks(frames, sse_retry(retry_ms))
        heartbeat = self._state.config.heartbeat
        broker, reader = self._broker, self._reader
        last_write = last_poll = monotonic()
        while True:
            woke = reader.wait(min(heartbeat, _OWNER_CHECK))
            try:
                fresh: list[bytes] | None = []
                # The outbox is read when woken, and once a heartbeat in case a
                # wake-up was lost; otherwise only the owner's liveness is
                # checked (cached per worker: thousands of idle streams cost
                # one broker call a second, not one each).
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
                # replays from Last-Event-ID once the broker is back.
                logger.warning("flask_athena: stream ended: %s", exc.message)
                return
            if fresh:
                cursor += len(fresh)
                self.sent = cursor
                self.count_sent(len(fresh))
                last_write = monotonic()
                yield from chunks(fresh)
            elif monotonic() - last_write >= heartbeat:
                last_write = monotonic()
                yield HEARTBEAT_EVENT

    def _release(self) -> None:
        self._reader.close()
        gevent.spawn(self._tell_owner, self._detach_request)

    def _tell_owner(self, req: Forwarded) -> None:
        try:
            self._broker.forward(self._owner, req, 10.0)
        except AthenaError as exc:  # the owner may be gone: its reaper cleans up
            logger.info("flask_athena: detach not delivered: %s", exc.message)
