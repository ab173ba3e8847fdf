"""The calls endpoint, written once: its checks and :func:`answer_calls`.

``POST <prefix>/<page>/calls`` is the browser → server lane. The view in
:mod:`flask_athena.transport` is two lines::

    page, batch = checked_calls(state, page_id, request, session)
    return calls_response(*answer_calls(state, page, batch))

and :func:`checked_calls` reads down this module's checks in order::

    check_origin(state, request)                 # CSRF: same origin or allowed
    body = read_json_body(state, request)        # content type, size before reading
    page = find_page(state, page_id)             # 404 for unknown or closed pages
    check_session(page, session)                 # the page's session, not another's
    check_token(page, request.headers.get(TOKEN_HEADER))
    batch = parse_batch(body)                    # JSON shape and depth (protocol.py)

Every check raises an :class:`~flask_athena.errors.AthenaError` whose status
and stable ``code`` become the JSON error body (:func:`error_response`).
Requests forwarded from another worker (Redis broker) skip what the worker
that took the request already did and call :func:`checked_page` and
:func:`answer_calls` with the parsed batch: no request is rebuilt.

All of it runs in the greenlet of the request (or of the forwarded request);
only :func:`answer_calls` may block, while the exposed methods it runs do.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping

from flask import Response, has_app_context
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from .errors import (
    AthenaError,
    BodyTooLarge,
    Forbidden,
    PageNotFound,
    UnsupportedMediaType,
)
from .limits import read_body
from .page import LivePage
from .protocol import Batch, dumps, parse_batch
from .proxy import public_origin
from .state import SESSION_KEY, AthenaState

logger = logging.getLogger("flask_athena")

#: The header that carries the page's secret token on every POST.
TOKEN_HEADER = "X-Athena-Token"
#: The ``Content-Type`` of every answer of the endpoint.
JSON_MIMETYPE = "application/json"
#: WSGI environ key under which :mod:`flask_athena.lane` leaves a calls POST's
#: body it read with :func:`read_json_body`'s checks, for the view to reuse.
#: A client cannot set it (request headers become ``HTTP_*`` keys).
READ_BODY_KEY = "flask_athena.body"


# -- checks -------------------------------------------------------------------

#: (scheme, Host, SERVER_NAME, SERVER_PORT, trusted hosts) -> origin; bounded.
_host_origins: dict[tuple[object, ...], str] = {}


def host_origin(request: Request) -> str:
    """``request.host_url`` without its trailing slash: the origin this app sees.

    Memoised on what it is computed from (werkzeug's ``host_url`` costs a
    tenth of a call); raises werkzeug's ``SecurityError`` (400) for a Host
    outside ``TRUSTED_HOSTS`` as ``host_url`` does.
    """
    environ = request.environ
    key = (
        environ.get("wsgi.url_scheme"),
        environ.get("HTTP_HOST"),
        environ.get("SERVER_NAME"),
        environ.get("SERVER_PORT"),
        tuple(request.trusted_hosts or ()),
    )
    origin = _host_origins.get(key)
    if origin is None:
        origin = request.host_url.rstrip("/")
        if len(_host_origins) >= 256:
            _host_origins.clear()
        _host_origins[key] = origin
    return origin


def check_origin(state: AthenaState, request: Request) -> None:
    """Refuse cross-site POSTs (CSRF): the same origin or an allowed one.

    A browser sends ``Origin`` on every POST; without it, only
    ``Sec-Fetch-Site: same-origin`` (or ``none``: typed by the user) passes.
    Raises :class:`~flask_athena.errors.Forbidden` (403). Does not block.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        origin = origin.rstrip("/")
        hops = state.config.proxy_hops
        # Forwarding headers only count when the app trusts that many
        # proxies (ATHENA_PROXY_HOPS): any client can send them.
        own = host_origin(request) if hops == 0 else public_origin(request.environ, hops)
        if origin == own:
            state.origin_accepted = True
            return
        if origin in state.config.allowed_origins:
            return
        hint_proxy_setup(state, request, origin, own)
        raise Forbidden("Cross-origin request refused.")
    if request.headers.get("Sec-Fetch-Site") in ("same-origin", "none"):
        return
    raise Forbidden("An Origin or Sec-Fetch-Site header is required.")


#: Request headers that reverse proxies add.
PROXY_HEADERS = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded")


def hint_proxy_setup(state: AthenaState, request: Request, origin: str, own: str) -> None:
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
    present = [name for name in PROXY_HEADERS if name in request.headers]
    if not present:
        return
    if state.origin_accepted and request.headers.get("Sec-Fetch-Site") != "same-origin":
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


def check_stream_origin(state: AthenaState, request: Request) -> None:
    """Refuse event streams opened by another origin's page.

    Browsers send a same-site page's cookies with its cross-origin
    ``EventSource``; without this check it would attach (replacing the
    page's own stream) and its ``?last=`` would trim the page's outbox.
    Clients that send neither header (not a browser page) pass. Raises
    :class:`~flask_athena.errors.Forbidden` (403). Does not block.
    """
    if request.headers.get("Origin") is not None:
        check_origin(state, request)
    elif request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise Forbidden("Cross-origin request refused.")


def check_session_key(page: LivePage, key: object) -> None:
    """Refuse a request whose session key is not the page's (403).

    ``key`` is what the request's session holds under
    :data:`~flask_athena.state.SESSION_KEY`; compared in constant time.
    """
    if not isinstance(key, str) or not hmac.compare_digest(key, page.session_key):
        raise Forbidden("This page belongs to another session.")


def check_session(page: LivePage, session: Mapping[str, object]) -> None:
    """Refuse a request from another browser session than the page's (403)."""
    check_session_key(page, session.get(SESSION_KEY))


def check_token(page: LivePage, token: object) -> None:
    """Refuse a POST without the page's secret token (403); constant time."""
    if not isinstance(token, str) or not hmac.compare_digest(token.encode(), page.token.encode()):
        raise Forbidden("Missing or wrong page token.")


def read_json_body(state: AthenaState, request: Request) -> bytes:
    """Read a JSON POST body of at most ``ATHENA_MAX_BODY_SIZE`` bytes.

    Refuses another content type (415) and a declared length over the limit
    before reading a byte (413); reads at most one byte past the limit.
    Blocks the request's greenlet while the client sends the body, at most
    ``ATHENA_BODY_TIMEOUT`` seconds (then 408); a client that goes away
    mid-body or sends a malformed one (bad chunked framing) gets a 400
    (:func:`flask_athena.limits.read_body`).
    """
    if request.mimetype != JSON_MIMETYPE:
        raise UnsupportedMediaType()
    limit = state.config.max_body_size
    length = request.content_length
    if length is not None and length > limit:
        raise BodyTooLarge()  # refused before reading a byte
    return read_body(request.stream, limit, state.config.body_timeout)


def find_page(state: AthenaState, page_id: str) -> LivePage:
    """The open page ``page_id`` this worker owns, or :class:`PageNotFound` (404)."""
    page = state.pages.get(page_id)
    if page is None or page.closed:
        raise PageNotFound()
    return page


def checked_page(state: AthenaState, page_id: str, session_key: object, token: object) -> LivePage:
    """:func:`find_page`, then the session binding and the token, in that order.

    What a request forwarded by another worker still needs checked on the
    owner (the Origin, body and batch shape were checked where it arrived).
    """
    page = find_page(state, page_id)
    check_session_key(page, session_key)
    check_token(page, token)
    return page


def checked_calls(
    state: AthenaState, page_id: str, request: Request, session: Mapping[str, object]
) -> tuple[LivePage, Batch]:
    """Every check of a calls POST, in order; return the page and the parsed batch.

    :func:`check_origin`, :func:`read_json_body`, then :func:`checked_body`.
    Used by the ``calls`` view. Blocks the request's greenlet only while the
    body is read. A body the results lane already read with the same checks
    (:data:`READ_BODY_KEY`) is taken as read.
    """
    check_origin(state, request)
    body = request.environ.get(READ_BODY_KEY)
    if not isinstance(body, bytes):
        body = read_json_body(state, request)
    return checked_body(state, page_id, request, session, body)


def checked_body(
    state: AthenaState,
    page_id: str,
    request: Request,
    session: Mapping[str, object],
    body: bytes,
) -> tuple[LivePage, Batch]:
    """The checks of a calls POST once its body is read: page, session, token, batch.

    Used by :func:`checked_calls` and :mod:`flask_athena.lane`. Does not block.
    """
    page = find_page(state, page_id)
    check_session(page, session)
    check_token(page, request.headers.get(TOKEN_HEADER))
    return page, parse_batch(body)


# -- the answer ---------------------------------------------------------------


def answer_calls(state: AthenaState, page: LivePage, batch: Batch) -> tuple[int, str]:
    """Apply one checked, parsed batch to ``page``; return ``(status, JSON body)``.

    Results of server → browser calls and the ack apply at once; sequenced
    calls run one at a time in ``seq`` order (:meth:`LivePage.receive`), so
    this blocks the calling greenlet while exposed methods run or wait.

    Context: exposed methods run in whatever Flask context is active. The
    view calls this inside the POST's request context, so they see
    ``session``, ``g``, ``request`` and ``url_for`` as a view does. Called
    without an app context (a forwarded request), one is pushed for the
    app of ``state``; exposed methods then have no ``request`` or
    ``session``.
    """
    if has_app_context():
        return page.receive(batch)
    with state.app.app_context():
        return page.receive(batch)


# -- answers ------------------------------------------------------------------


def error_response(error: AthenaError) -> Response:
    """``{"error": {"code", "message"}}`` with the status of ``error``'s class."""
    return Response(dumps({"error": error.to_json()}), error.status_code, mimetype=JSON_MIMETYPE)


def http_error_response(error: HTTPException) -> Response:
    """A werkzeug HTTP error (404 route, 405 method...) as the same JSON body.

    The code is the error's name in kebab case (``method-not-allowed``);
    headers such as ``Allow`` are kept.
    """
    code = (error.name or "error").lower().replace(" ", "-")
    response = Response(
        dumps({"error": {"code": code, "message": error.description or error.name}}),
        error.code or 400,
        mimetype=JSON_MIMETYPE,
    )
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # e.g. Allow on a 405
    return response


def internal_error_response() -> Response:
    """The 500 answer: a generic JSON body; the traceback is logged, never sent."""
    return Response(
        dumps({"error": {"code": "internal-error", "message": "Internal server error."}}),
        500,
        mimetype=JSON_MIMETYPE,
    )


def calls_response(status: int, reply: str) -> Response:
    """The HTTP answer of :func:`answer_calls`."""
    return Response(reply, status, mimetype=JSON_MIMETYPE)
