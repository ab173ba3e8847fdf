"""The blueprint: the event stream, the calls endpoint, close, static files.

Every answer of these views is JSON or ``text/event-stream``; any error is a
``{"error": {"code", "message"}}`` body with the status of its
:class:`~flask_athena.errors.AthenaError` class. Tracebacks are logged, never
sent.
"""

from __future__ import annotations

import logging
from collections.abc import Generator

from flask import Blueprint, Response, current_app, request, send_file, session
from flask.blueprints import BlueprintSetupState
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Rule

from .endpoint import (
    answer_calls,
    calls_response,
    check_origin,
    check_session,
    check_stream_origin,
    check_token,
    checked_calls,
    error_response,
    http_error_response,
    internal_error_response,
    read_json_body,
)
from .errors import (
    AthenaError,
    BadRequest,
    BrokerUnavailable,
    PageNotFound,
    TooManyPages,
)
from .page import LivePage
from .protocol import (
    HEARTBEAT_EVENT,
    loads,
    sse_retry,
)
from .shared_stream import shared_events
from .state import AthenaState
from .stream import StreamBody, admit_stream, chunks, event_stream_response, gone, gone_response

logger = logging.getLogger("flask_athena")

#: Browser reconnect delay suggested in the stream's ``retry:`` field.
RETRY_MS = 1000

blueprint = Blueprint("athena", __name__, static_folder="static", static_url_path="/static")


def _state() -> AthenaState:
    state: AthenaState = current_app.extensions["athena"]
    return state


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
    return http_error_response(error)


@blueprint.errorhandler(Exception)
def _unexpected(error: Exception) -> Response:
    logger.exception("flask_athena endpoint failed")
    return internal_error_response()


# -- views --------------------------------------------------------------------


@blueprint.post("/<page_id>/calls", provide_automatic_options=False)
def calls(page_id: str) -> Response:
    """Browser → server calls: the checks of :mod:`~flask_athena.endpoint`, in order,
    then :func:`~flask_athena.endpoint.answer_calls` in this request's context."""
    state = _state()
    if state.remote is not None and page_id not in state.pages:
        return state.remote.calls(page_id)  # another worker owns it
    page, batch = checked_calls(state, page_id, request, session)
    return calls_response(*answer_calls(state, page, batch))


@blueprint.post("/<page_id>/close", provide_automatic_options=False)
def close(page_id: str) -> Response:
    """The beacon: the browser left; close the page (204, also when already closed)."""
    state = _state()
    if state.remote is not None and page_id not in state.pages:
        return state.remote.close(page_id)
    check_origin(state, request)
    body = loads(read_json_body(state, request))
    page = state.pages.get(page_id)
    if page is None:
        return Response(status=204)  # closing twice is fine
    check_session(page, session)
    check_token(page, body.get("token") if isinstance(body, dict) else None)
    page.close("closed")
    return Response(status=204)


def _last_event_id() -> int:
    raw = request.headers.get("Last-Event-ID") or request.args.get("last") or "0"
    # isdigit() alone admits "²" and other Unicode digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest("Last-Event-ID must be a non-negative integer.")
    return int(raw)


@blueprint.get("/<page_id>/events", provide_automatic_options=False)
def events(page_id: str) -> Response:
    """The page's event stream: replay after ``Last-Event-ID``, then live messages.

    The response body (:class:`EventStream`) runs in the request's greenlet
    for as long as the connection stays open.
    """
    return page_events(page_id, _last_event_id())


# The stream the tabs of one browser share (DESIGN §9; its own module).
blueprint.add_url_rule("/events", "shared_events", shared_events, methods=["GET"])


def page_events(page_id: str, last: int, ack: bool = True) -> Response:
    """Attach an event stream to ``page_id``, replaying what follows ``last``.

    The per-page view and the shared stream (:mod:`flask_athena.shared_stream`)
    both attach pages through this; runs in the request's context and greenlet.
    ``ack``: ``last`` also acknowledges (the page's own Last-Event-ID does; a
    shared stream's leader only knows what it relayed, not what the tab has).
    Without it nothing is acknowledged, and a ``last`` below the page's
    acknowledged seq starts from that seq: the tab has those messages (it
    acknowledged them in its own POSTs), and they may be forgotten already.
    A page another worker owns is served by the broker, with the same rules.
    """
    state = _state()
    check_stream_origin(state, request)
    if state.remote is not None and page_id not in state.pages:
        # Another worker owns the page: the broker serves its stream.
        return state.remote.events(page_id, last, RETRY_MS, ack)
    page = state.pages.get(page_id)
    if page is None or page.closed:
        # Not an error status: EventSource hides those. The browser must
        # learn that replay is impossible and reload.
        return gone_response("unknown-page", RETRY_MS)
    check_session(page, session)
    if not ack:
        last = max(last, page.outbox.acked)
    frames = page.outbox.read(last)
    if frames is None:
        return gone_response("outbox-trimmed", RETRY_MS)
    key = page.session_key
    admit_stream(state, key)
    if ack:
        page.outbox.ack(last)
    state.session_streams[key] = state.session_streams.get(key, 0) + 1
    # Attach here, in the request context, so connected() hooks can use
    # session, g and url_for like any view.
    generation = page.attach_stream()
    stream = EventStream(state, page, generation, last, frames)
    page.serve_stream(stream)  # this worker serves it (not another, with Redis)
    return event_stream_response(stream)


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
        yield from chunks(frames, sse_retry(RETRY_MS))
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
                yield from chunks(fresh)

    def local_page(self) -> LivePage:
        """The page (this worker owns it)."""
        return self._page

    def _release(self) -> None:
        self._page.stream_ended(self, self._generation)


def _wrong_method(page_id: str, allowed: str) -> Response:
    raise MethodNotAllowed(valid_methods=[allowed])


# A wrong method is a routing error, and routing errors never reach a
# blueprint's error handlers (Flask would answer with its HTML page): each
# endpoint gets a rule of its own for every other method, so the 405 is JSON
# like every answer. "Every other" includes OPTIONS, TRACE, PROPFIND and any
# made-up method, so the rule has no method list at all (a werkzeug Rule
# with ``methods=None`` matches every method); Flask's add_url_rule would
# turn None into GET, so the rule goes into the app's url_map directly.
_ALLOWED = {"calls": "POST", "close": "POST", "events": "GET"}


@blueprint.record
def _add_wrong_method_rules(setup: BlueprintSetupState) -> None:
    app = setup.app
    for name, allowed in _ALLOWED.items():
        # One endpoint per rule: werkzeug redirects between rules that
        # share an endpoint and differ in their defaults.
        endpoint = f"{blueprint.name}.{name}_wrong_method"
        app.view_functions[endpoint] = _wrong_method
        app.url_map.add(
            Rule(
                f"{setup.url_prefix or ''}/<page_id>/{name}",
                endpoint=endpoint,
                methods=None,
                defaults={"allowed": allowed},
            )
        )


@blueprint.get("/modules/<name>.js")
def module_file(name: str) -> Response:
    """A JS module registered with a file path (:meth:`Athena.register_module`)."""
    path = _state().modules.paths.get(name)
    if path is None:
        raise PageNotFound("No such module.")
    return send_file(path, mimetype="text/javascript")
