"""The blueprint: the event stream, the calls endpoint, close, static files.

Every answer of these views is JSON or ``text/event-stream``; any error is a
``{"error": {"code", "message"}}`` body with the status of its
:class:`~flask_athena.errors.AthenaError` class. Tracebacks are logged, never
sent.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Generator

from flask import Blueprint, Request, Response, current_app, request, send_file, session
from flask.sessions import SessionMixin
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .broker.redis_outbox import RedisOutbox
from .errors import (
    AthenaError,
    BadRequest,
    BodyTooLarge,
    BrokerUnavailable,
    Forbidden,
    PageNotFound,
    TooManyPages,
    UnsupportedMediaType,
)
from .forwarding import forward_post, is_forwarded, remote_events
from .limits import read_body
from .page import LivePage
from .protocol import (
    HEARTBEAT_EVENT,
    dumps,
    loads,
    parse_batch,
    sse_retry,
)
from .proxy import public_origin
from .state import SESSION_KEY, AthenaState
from .stream import StreamBody, admit_stream, event_stream_response, gone, gone_response

logger = logging.getLogger("flask_athena")

#: Browser reconnect delay suggested in the stream's ``retry:`` field.
RETRY_MS = 1000

blueprint = Blueprint("athena", __name__, static_folder="static", static_url_path="/static")


def _state() -> AthenaState:
    state: AthenaState = current_app.extensions["athena"]
    return state


def error_response(error: AthenaError) -> Response:
    return Response(
        dumps({"error": error.to_json()}), error.status_code, mimetype="application/json"
    )


@blueprint.errorhandler(AthenaError)
def _athena_error(error: AthenaError) -> Response:
    return error_response(error)


@blueprint.app_errorhandler(TooManyPages)
def _too_many_pages(error: TooManyPages) -> Response:
    # athena.page() raises this inside the app's own view, out of reach of
    # the blueprint's handlers: answer 429 JSON rather than a 500.
    return error_response(error)


@blueprint.app_errorhandler(BrokerUnavailable)
def _broker_unavailable(error: BrokerUnavailable) -> Response:
    # athena.page() needs Redis (with ATHENA_BROKER_URL) inside the app's own
    # view: answer 503 JSON (retry later) rather than a 500.
    return error_response(error)


@blueprint.errorhandler(HTTPException)
def _http_error(error: HTTPException) -> Response:
    code = (error.name or "error").lower().replace(" ", "-")
    response = Response(
        dumps({"error": {"code": code, "message": error.description or error.name}}),
        error.code or 400,
        mimetype="application/json",
    )
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on a 405
    return response


@blueprint.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    logger.exception("flask_athena endpoint failed")
    return Response(
        dumps({"error": {"code": "internal-error", "message": "Internal server error."}}),
        500,
        mimetype="application/json",
    )


# -- checks -------------------------------------------------------------------


def _check_origin(state: AthenaState, req: Request | None = None) -> None:
    """Refuse cross-site POSTs (CSRF): same origin or an allowed one.

    ``req`` defaults to the current request (the lean calls path of
    ``fastcalls.py`` passes its own, outside any request context).
    """
    if req is None:
        req = request
    origin = req.headers.get("Origin")
    if origin is not None:
        hops = state.config.proxy_hops
        # Forwarding headers only count when the app trusts that many
        # proxies (ATHENA_PROXY_HOPS): any client can send them.
        own = req.host_url.rstrip("/") if hops == 0 else public_origin(req.environ, hops)
        if origin.rstrip("/") == own:
            state.origin_accepted = True
            return
        if origin.rstrip("/") in state.config.allowed_origins:
            return
        _hint_proxy_setup(state, req, origin, own)
        raise Forbidden("Cross-origin request refused.")
    if req.headers.get("Sec-Fetch-Site") in ("same-origin", "none"):
        return
    raise Forbidden("An Origin or Sec-Fetch-Site header is required.")


#: Request headers that reverse proxies add.
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")


def _hint_proxy_setup(state: AthenaState, req: Request, origin: str, own: str) -> None:
    """Log once per worker, with the fix, when refused POSTs look like a proxy setup error.

    Behind a proxy that sends the upstream's name as ``Host``, or terminates
    TLS without the app trusting ``X-Forwarded-Proto``, *every* POST is
    refused and the app looks dead with nothing in the logs. The signs: the
    request came through a proxy (it carries forwarding headers) and either
    no POST has passed the Origin check in this worker yet, or the browser
    itself says the request is same-origin (``Sec-Fetch-Site``). A real
    cross-site POST may trigger it too, hence once and worded as a question.
    """
    if state.proxy_hint_logged:
        return
    present = [name for name in PROXY_HEADERS if name in req.headers]
    if not present:
        return
    if state.origin_accepted and req.headers.get("Sec-Fetch-Site") != "same-origin":
        return
    state.proxy_hint_logged = True
    logger.warning(
        "flask_athena refused a POST: its Origin %r is not the origin this app "
        "sees, %r, and it came through a proxy (%s). Behind a proxy? Set "
        "ATHENA_PROXY_HOPS to the number of proxies in front (now %d) so their "
        "X-Forwarded-Proto/-Host count, or have the proxy pass the browser's "
        "host and scheme (nginx: proxy_set_header Host $http_host; "
        "proxy_set_header X-Forwarded-Proto $scheme). Logged once per worker.",
        origin[:200],
        own,
        ", ".join(present),
        state.config.proxy_hops,
    )


def _check_stream_origin(state: AthenaState) -> None:
    """Refuse event streams opened by another origin's page.

    Browsers send a same-site page's cookies with its cross-origin
    ``EventSource``; without this check it would attach (replacing the
    page's own stream) and its ``?last=`` would trim the page's outbox.
    Clients that send neither header (not a browser page) pass.
    """
    if request.headers.get("Origin") is not None:
        _check_origin(state)
    elif request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise Forbidden("Cross-origin request refused.")


def _check_session(page: LivePage, sess: SessionMixin | None = None) -> None:
    key = (session if sess is None else sess).get(SESSION_KEY)
    if not isinstance(key, str) or not hmac.compare_digest(key, page.session_key):
        raise Forbidden("This page belongs to another session.")


def _check_token(page: LivePage, token: object) -> None:
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), page.token.encode()):
        raise Forbidden("Missing or wrong page token.")


def _read_json_body(state: AthenaState, req: Request | None = None) -> bytes:
    if req is None:
        req = request
    if req.mimetype != "application/json":
        raise UnsupportedMediaType()
    limit = state.config.max_body_size
    length = req.content_length
    if length is not None and length > limit:
        raise BodyTooLarge()  # refused before reading a byte
    return read_body(req.stream, limit, state.config.body_timeout)


def _page(state: AthenaState, page_id: str) -> LivePage:
    page = state.pages.get(page_id)
    if page is None or page.closed:
        raise PageNotFound()
    return page


# -- views --------------------------------------------------------------------


@blueprint.post("/<page_id>/calls")
def calls(page_id: str) -> Response:
    state = _state()
    if state.cluster is not None and page_id not in state.pages and not is_forwarded():
        return forward_post(state, state.cluster, page_id, closing=False)
    _check_origin(state)
    body = _read_json_body(state)
    page = _page(state, page_id)
    _check_session(page)
    _check_token(page, request.headers.get("X-Athena-Token"))
    batch = parse_batch(body)
    status, reply = page.receive(batch)
    return Response(reply, status, mimetype="application/json")


@blueprint.post("/<page_id>/close")
def close(page_id: str) -> Response:
    state = _state()
    if state.cluster is not None and page_id not in state.pages and not is_forwarded():
        return forward_post(state, state.cluster, page_id, closing=True)
    _check_origin(state)
    body = loads(_read_json_body(state))
    page = state.pages.get(page_id)
    if page is None:
        return Response(status=204)  # closing twice is fine
    _check_session(page)
    _check_token(page, body.get("token") if isinstance(body, dict) else None)
    page.close("closed")
    return Response(status=204)


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last") or "0"
    # isdigit() alone admits "²" and other Unicode digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest("Last-Event-ID must be a non-negative integer.")
    return int(raw)


@blueprint.get("/<page_id>/events")
def events(page_id: str) -> Response:
    state = _state()
    _check_stream_origin(state)
    last = _last_event_id()
    if state.cluster is not None and page_id not in state.pages:
        # Another worker owns the page: stream it from Redis.
        return remote_events(state, state.cluster, page_id, last, RETRY_MS)
    page = state.pages.get(page_id)
    if page is None or page.closed:
        # Not an error status: EventSource hides those. The browser must
        # learn that replay is impossible and reload.
        return gone_response("unknown-page", RETRY_MS)
    _check_session(page)
    frames = page.outbox.read(last)
    if frames is None:
        return gone_response("outbox-trimmed", RETRY_MS)
    key = page.session_key
    admit_stream(state, key)
    page.outbox.ack(last)
    state.session_streams[key] = state.session_streams.get(key, 0) + 1
    # Attach here, in the request context, so connected() hooks can use
    # session, g and url_for like any view.
    generation = page.attach_stream()
    if isinstance(page.outbox, RedisOutbox):
        page.outbox.reader = None  # this worker serves the stream now
    page.stream = EventStream(state, page, generation, last, frames)
    return event_stream_response(page.stream)


class EventStream(StreamBody):
    """The body of one event stream; iterated in the request's greenlet.

    Holds no request context (memory per idle page matters). Ends when the
    page closes, a newer stream replaces it, a write fails, or it is cut as a
    slow consumer (see :mod:`flask_athena.stream`): the server sends a
    heartbeat every ``ATHENA_HEARTBEAT`` seconds because a dead client is
    only noticed on write. The WSGI server calls :meth:`close` whatever
    happened, even before the first chunk, so cleanup is certain.
    """

    __slots__ = ("_page", "_generation")

    def __init__(
        self, state: AthenaState, page: LivePage, generation: int, cursor: int, frames: list[bytes]
    ) -> None:
        super().__init__(state, page.session_key)
        self._page = page
        self._generation = generation
        self._body = self._run(cursor, frames)

    def _run(self, cursor: int, frames: list[bytes]) -> Generator[bytes, None, None]:
        page, generation = self._page, self._generation
        self.count_sent(len(frames), replayed=cursor > 0)
        cursor += len(frames)
        self.sent = cursor
        yield sse_retry(RETRY_MS) + b"".join(frames)
        heartbeat = self._state.config.heartbeat
        outbox = page.outbox
        while True:
            # Checked before and after waiting: a newer stream's wake-up may
            # have come while this one was busy writing.
            if page.stream_generation != generation:
                return  # replaced by a newer stream of the same page
            woke = outbox.wait(cursor, heartbeat)
            if page.stream_generation != generation:
                return
            if page.closed:
                yield gone(self._state.app, page.close_reason or "closed")
                return
            if not woke:
                yield HEARTBEAT_EVENT
                continue
            try:
                fresh = outbox.read(cursor)
            except BrokerUnavailable as exc:
                # Redis broker only: end the stream; the browser reconnects
                # with backoff and replays from Last-Event-ID.
                logger.warning("flask_athena: stream ended: %s", exc.message)
                return
            if fresh is None:
                # The outbox dropped messages this stream never sent (slow
                # consumer): say so rather than leave a gap.
                yield gone(self._state.app, "outbox-trimmed")
                return
            if fresh:
                cursor += len(fresh)
                self.sent = cursor
                self.count_sent(len(fresh))
                yield b"".join(fresh)

    def local_page(self) -> LivePage:
        return self._page

    def _release(self) -> None:
        if self._page.stream is self:
            self._page.stream = None
        self._page.detach_stream(self._generation)


# -- internal endpoints of the Redis broker ------------------------------------
# Reached only by requests another worker forwarded (environ flag, see
# forwarding.py); anybody else gets the same 404 as for an unknown page.


def _forwarded_page(state: AthenaState, page_id: str) -> tuple[LivePage, RedisOutbox]:
    page = _page(state, page_id)
    if not is_forwarded() or not isinstance(page.outbox, RedisOutbox):
        raise PageNotFound()
    return page, page.outbox


@blueprint.post("/<page_id>/_attach")
def attach_remote(page_id: str) -> Response:
    """A worker that does not own the page serves its stream: attach it here."""
    state = _state()
    page, outbox = _forwarded_page(state, page_id)
    _check_session(page)
    body = loads(_read_json_body(state))
    reader = body.get("reader") if isinstance(body, dict) else None
    if not isinstance(reader, str):
        raise BadRequest()
    generation = page.attach_stream()
    outbox.reader = reader
    return Response(dumps({"gen": generation}), mimetype="application/json")


@blueprint.post("/<page_id>/_detach")
def detach_remote(page_id: str) -> Response:
    """The stream another worker served for this page ended."""
    state = _state()
    if not is_forwarded():
        raise PageNotFound()
    page = state.pages.get(page_id)
    body = loads(_read_json_body(state))
    generation = body.get("gen") if isinstance(body, dict) else None
    if page is not None and isinstance(generation, int) and isinstance(page.outbox, RedisOutbox):
        if generation == page.stream_generation:
            page.outbox.reader = None
        page.detach_stream(generation)
    return Response(status=204)


def _wrong_method(page_id: str, allowed: str) -> Response:
    raise MethodNotAllowed(valid_methods=[allowed])


# A wrong method is a routing error, and routing errors never reach a
# blueprint's error handlers (Flask would answer with its HTML page): give
# the other methods rules of their own so the 405 is JSON like every answer.
for _endpoint, _allowed in (("calls", "POST"), ("close", "POST"), ("events", "GET")):
    blueprint.add_url_rule(
        f"/<page_id>/{_endpoint}",
        f"{_endpoint}_wrong_method",
        _wrong_method,
        methods=[m for m in ("GET", "POST", "PUT", "PATCH", "DELETE") if m != _allowed],
        defaults={"allowed": _allowed},
        provide_automatic_options=False,
    )


@blueprint.get("/modules/<name>.js")
def module_file(name: str) -> Response:
    path = _state().athena.module_paths.get(name)
    if path is None:
        raise PageNotFound("No such module.")
    return send_file(path, mimetype="text/javascript")
