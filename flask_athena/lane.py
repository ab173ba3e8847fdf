"""The results lane: calls POSTs that run no user code, answered before Flask.

The browser answers every server → browser call and acknowledges what it
received in POSTs to the calls endpoint that carry no call of its own
(``{"ack": n, "messages": [{"type": "result", ...}]}``). Nothing of the app
runs for them, yet through Flask each costs a request context, routing, the
session round trip and a response object: measured in one run, about four
times what answering them directly costs (docs/decisions.rst). They are
most of the POSTs when the server calls the browser a lot, so
:class:`ResultsLane`, a WSGI middleware ``init_app`` puts around
``app.wsgi_app`` (Flask's documented way to add middleware), answers them
itself:

* with the very functions the ``calls`` view uses (the checks of
  :mod:`flask_athena.endpoint` in the same order, and
  :func:`~flask_athena.endpoint.answer_calls`), and the session from the
  app's own ``session_interface``;
* only on the happy path: a POST that fails a check, carries a call or a
  detach, or that the lane cannot read exactly like the view (no
  ``Content-Length``, a non-JSON type, a body over the limit) goes on to
  Flask unchanged, the body it read handed back as ``wsgi.input``; Flask's
  view then gives the one canonical answer, and takes the body the lane
  read as read (:data:`~flask_athena.endpoint.READ_BODY_KEY`: a call's
  body is read once);
* never for an app whose ``before_request`` functions apply to the
  endpoint, that sets ``TRUSTED_HOSTS``, ``SERVER_NAME`` or
  ``MAX_CONTENT_LENGTH``, uses host or subdomain matching, or a session
  interface other than flask_athena's caching one; nor (Redis) for a page
  another worker owns.

What differs from the view for the POSTs it answers: no app hook, request
signal or ``after_request`` function runs (no user code does), and a
permanent session's cookie is not refreshed by them. Everything runs in the
request's greenlet; nothing blocks but reading the body.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import LimitedStream

from .endpoint import (
    JSON_MIMETYPE,
    READ_BODY_KEY,
    answer_calls,
    check_origin,
    checked_body,
    error_response,
)
from .errors import AthenaError
from .limits import read_body
from .sessions import CachingSessionInterface

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .state import AthenaState


class ResultsLane:
    """The WSGI middleware of the results lane; see the module docstring."""

    def __init__(self, app: Flask, state: AthenaState, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.state = state
        #: The WSGI app the lane wraps (Flask's own ``wsgi_app``).
        self.wsgi_app = wsgi_app
        self.prefix = state.config.url_prefix + "/"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer a results-only calls POST, or pass the request on to Flask."""
        if environ.get("REQUEST_METHOD") == "POST":
            path: str = environ.get("PATH_INFO", "")
            if path.endswith("/calls") and path.startswith(self.prefix):
                page_id = path[len(self.prefix) : -6]
                if page_id in self.state.pages and self.eligible(environ):
                    answer = self.answer(environ, page_id)
                    if answer is not None:
                        status, headers, body = answer
                        start_response(status, headers)
                        return [body]
        return self.wsgi_app(environ, start_response)

    def eligible(self, environ: WSGIEnvironment) -> bool:
        """Whether the lane may answer this request exactly like the view."""
        app, config = self.app, self.app.config
        if (
            config.get("TRUSTED_HOSTS") is not None
            or config.get("SERVER_NAME") is not None
            or config.get("MAX_CONTENT_LENGTH") is not None
            or app.url_map.host_matching
            or app.subdomain_matching
            or not isinstance(app.session_interface, CachingSessionInterface)
        ):
            return False
        before = app.before_request_funcs
        if before and (before.get(None) or before.get("athena")):
            return False
        if environ.get("CONTENT_TYPE", "").partition(";")[0].strip() != JSON_MIMETYPE:
            return False
        length = environ.get("CONTENT_LENGTH")
        return bool(length and length.isdigit() and int(length) <= self.state.config.max_body_size)

    def answer(
        self, environ: WSGIEnvironment, page_id: str
    ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """``(status line, headers, body)``, or ``None`` to let Flask answer."""
        app, state = self.app, self.state
        # eligible() checked the type and a Content-Length within the limit:
        # read what read_json_body would, without building a request yet.
        length = int(environ["CONTENT_LENGTH"])
        try:
            body = read_body(
                LimitedStream(environ["wsgi.input"], length),
                state.config.max_body_size,
                state.config.body_timeout,
            )
        except AthenaError as exc:
            # The body is gone (the client left mid-body; type and length
            # passed eligible()), so answer here what the view would.
            request = app.request_class(environ)
            try:
                check_origin(state, request)
            except AthenaError as refused:
                return self._error(refused)
            return self._error(exc)
        # Flask reads the same bytes if the lane hands the request on, and
        # the calls view takes them as read (endpoint.checked_calls).
        environ["wsgi.input"] = io.BytesIO(body)
        environ[READ_BODY_KEY] = body
        if b'"seq"' in body:
            # A call or a detach (each carries "seq", unless escaped: then
            # batch.sequenced below catches it): user code runs,
            # and the view runs it in a request context. Only a result
            # whose value contains the text goes the long way for nothing.
            return None
        request = app.request_class(environ)
        try:
            check_origin(state, request)
            session = app.session_interface.open_session(app, request)
            if session is None:
                return None
            page, batch = checked_body(state, page_id, request, session, body)
        except (AthenaError, HTTPException):
            return None
        if batch.sequenced:
            return None  # user code runs: the view runs it in a request context
        try:
            status, reply = answer_calls(state, page, batch)
        except AthenaError as exc:
            return self._error(exc)
        data = reply.encode()
        headers = [
            ("Content-Type", JSON_MIMETYPE),
            ("Content-Length", str(len(data))),
            ("Vary", "Cookie"),  # what Flask's session saving adds for an accessed session
        ]
        return f"{status} {HTTP_STATUS_CODES.get(status, 'ERROR').upper()}", headers, data

    @staticmethod
    def _error(error: AthenaError) -> tuple[str, list[tuple[str, str]], bytes]:
        response = error_response(error)
        return response.status, list(response.headers.items()), response.get_data()
