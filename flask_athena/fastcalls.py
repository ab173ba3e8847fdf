"""The lean path for ``POST <prefix>/<page>/calls`` (``ATHENA_FAST_CALLS``).

A WSGI middleware that ``init_app`` puts around ``app.wsgi_app``. It answers
calls POSTs before Flask routing, with the checks of the ``calls`` view
(the same helpers, so the same order, status codes and JSON error bodies),
and spends Flask's per-request work only where it buys something:

* the session cookie is decoded once per distinct cookie value (the HMAC,
  base64 and JSON of ``SecureCookieSessionInterface.open_session``) and the
  decoded data is kept in a small table; the signature's age is checked
  against ``PERMANENT_SESSION_LIFETIME`` on every request as itsdangerous
  does;
* a POST that carries only results and acks (no user code runs) gets no
  request context at all;
* a POST with calls runs them in a full request context (``session`` read
  and write, ``g``, ``request``, ``current_app``, ``url_for``, relative
  endpoints of the ``athena`` blueprint), with the app's ``after_request``
  and teardown hooks and the session saved as usual; only URL routing is
  skipped (the rule is known).

Requests it cannot answer exactly like the view go on to Flask unchanged:
an app with ``before_request`` or URL value preprocessor functions that
apply to the blueprint, ``TRUSTED_HOSTS`` / ``SERVER_NAME`` / host or
subdomain matching, a session interface other than Flask's cookie one, and
(Redis) a page this worker does not own. docs/decisions.rst explains the
choice of default.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response
from flask.ctx import RequestContext
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask.signals import request_finished, request_started
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Rule

from . import transport
from .errors import AthenaError
from .protocol import parse_batch

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .page import LivePage
    from .protocol import Batch
    from .state import AthenaState

logger = logging.getLogger("flask_athena")

#: Decoded session cookies kept (oldest dropped first).
SESSION_CACHE_SIZE = 4096

_SCALARS = (str, int, float, bool, type(None))
_STATUS_LINES = {200: "200 OK"}
#: Flask >= 3.1: ``request.max_content_length`` can be set per request.
_LIMIT_SETTABLE = getattr(getattr(Request, "max_content_length", None), "fset", None) is not None


class SessionCache:
    """``open_session`` of Flask's cookie sessions, decoding each cookie once.

    Only cookies whose data are plain scalars are kept (a session built from
    them shares nothing mutable with the table). The table is emptied when
    the secret keys change.
    """

    def __init__(self, size: int = SESSION_CACHE_SIZE) -> None:
        self.size = size
        self._keys: tuple[Any, ...] | None = None
        self._serializer: URLSafeTimedSerializer | None = None
        #: Cookie header -> (data, signing timestamp)
        self._table: dict[str, tuple[dict[str, Any], int]] = {}

    def open(
        self, app: Flask, interface: SecureCookieSessionInterface, req: Request
    ) -> SessionMixin:
        if not app.secret_key:
            return interface.make_null_session(app)
        name = interface.get_cookie_name(app)
        keys = (
            app.secret_key,
            tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()),
            interface.salt,
            name,
        )
        if keys != self._keys:
            self._keys, self._table = keys, {}
            self._serializer = interface.get_signing_serializer(app)
        max_age = int(app.permanent_session_lifetime.total_seconds())
        header = req.environ.get("HTTP_COOKIE")
        hit = self._table.get(header) if header else None
        if hit is not None:
            data, signed = hit
            age = int(time.time()) - signed
            if 0 <= age <= max_age:  # itsdangerous' own test
                return interface.session_class(data)
            del self._table[header]  # type: ignore[arg-type]
        val = req.cookies.get(name)
        if not val:
            return interface.session_class()
        serializer = self._serializer
        assert serializer is not None
        try:
            data, stamp = serializer.loads(val, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return interface.session_class()
        if isinstance(data, dict) and all(type(v) in _SCALARS for v in data.values()):
            if len(self._table) >= self.size:
                del self._table[next(iter(self._table))]
            if header:
                self._table[header] = (dict(data), int(stamp.timestamp()))
        return interface.session_class(data)


class _CallsContext(RequestContext):
    """A request context whose URL rule is known: no routing."""

    rule: Rule
    page_id: str

    def match_request(self) -> None:
        self.request.url_rule = self.rule
        self.request.view_args = {"page_id": self.page_id}


class FastCalls:
    """The WSGI middleware; see the module docstring."""

    def __init__(self, app: Flask, state: AthenaState, wsgi_app: WSGIApplication) -> None:
        self.app = app
        self.state = state
        self.wsgi_app = wsgi_app
        self.prefix = state.config.url_prefix + "/"
        self.sessions = SessionCache()
        self._rule: Rule | None = None
        #: (scheme, Host, SERVER_NAME, SERVER_PORT) -> Request.host_url
        self._host_urls: dict[tuple[Any, ...], str] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST":
            path: str = environ.get("PATH_INFO", "")
            if path.endswith("/calls") and path.startswith(self.prefix):
                page_id = path[len(self.prefix) : -6]
                if page_id and "/" not in page_id and self._eligible(page_id):
                    host_url = self._host_url(environ)
                    if host_url is not None:
                        return self.handle(environ, start_response, page_id, host_url)
        return self.wsgi_app(environ, start_response)

    def _host_url(self, environ: WSGIEnvironment) -> str | None:
        """``Request.host_url``; None for a Host Flask refuses (it answers those)."""
        key = (
            environ.get("wsgi.url_scheme"),
            environ.get("HTTP_HOST"),
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
        )
        url = self._host_urls.get(key)
        if url is None:
            try:
                url = Request(environ).host_url
            except SecurityError:
                return None
            if len(self._host_urls) >= 256:
                self._host_urls.clear()
            self._host_urls[key] = url
        return url

    def _eligible(self, page_id: str) -> bool:
        app, state = self.app, self.state
        if state.cluster is not None and page_id not in state.pages:
            return False  # forwarded to the owner by the view
        config = app.config
        if (
            config.get("TRUSTED_HOSTS") is not None
            or config["SERVER_NAME"] is not None
            or (config.get("MAX_CONTENT_LENGTH") is not None and not _LIMIT_SETTABLE)
            or app.url_map.host_matching
            or app.subdomain_matching
            or type(app.session_interface) is not SecureCookieSessionInterface
        ):
            return False
        for table in (app.before_request_funcs, app.url_value_preprocessors):
            if table and (table.get(None) or table.get("athena")):
                return False
        if self._rule is None:
            rules = list(app.url_map.iter_rules("athena.calls"))
            if len(rules) != 1:
                return False
            self._rule = rules[0]
        return True

    def handle(
        self, environ: WSGIEnvironment, start_response: StartResponse, page_id: str, host_url: str
    ) -> Iterable[bytes]:
        app, state = self.app, self.state
        req = app.request_class(environ)
        req.json_module = app.json
        req.__dict__["host_url"] = host_url  # a cached_property
        limit = app.config.get("MAX_CONTENT_LENGTH")
        if limit is not None:
            # Outside an app context Flask's Request would not see the config.
            req.max_content_length = limit
        elif "wsgi.input_terminated" in environ:
            # What werkzeug's get_input_stream returns then (a cached_property).
            req.__dict__["stream"] = environ["wsgi.input"]
        sess: SessionMixin | None = None
        try:
            transport._check_origin(state, req)
            body = transport._read_json_body(state, req)
            page = transport._page(state, page_id)
            interface = app.session_interface
            assert isinstance(interface, SecureCookieSessionInterface)
            sess = self.sessions.open(app, interface, req)
            transport._check_session(page, sess)
            transport._check_token(page, req.headers.get("X-Athena-Token"))
            batch = parse_batch(body)
            if batch.sequenced:
                result = self._run_calls(environ, req, sess, page_id, page, batch)
                if isinstance(result, Response):
                    return result(environ, start_response)
                status, reply = result
            else:
                status, reply = page.receive(batch)
            # What Response(reply, status, mimetype=...) sends, without it.
            body = reply.encode()
            start_response(
                _STATUS_LINES.get(status) or f"{status} {HTTP_STATUS_CODES[status].upper()}",
                [
                    ("Content-Type", "application/json"),
                    ("Content-Length", str(len(body))),
                    ("Vary", "Cookie"),  # as Flask's session saving would
                ],
            )
            return [body]
        except AthenaError as exc:
            response = transport.error_response(exc)
        except HTTPException as exc:
            response = transport._http_error(exc)
        except Exception as exc:
            response = transport._unexpected(exc)
        if sess is not None and sess.accessed:
            response.vary.add("Cookie")
        return response(environ, start_response)

    def _run_calls(
        self,
        environ: WSGIEnvironment,
        req: Request,
        sess: SessionMixin,
        page_id: str,
        page: LivePage,
        batch: Batch,
    ) -> Response | tuple[int, str]:
        """Run a batch with calls the way ``Flask.wsgi_app`` runs a view.

        Returns ``(status, body)`` instead of a response when nothing would
        change the response (no ``after_request`` hook, no cookie to set).
        """
        app = self.app
        ctx = _CallsContext(app, environ, request=req, session=sess)
        assert self._rule is not None
        ctx.rule, ctx.page_id = self._rule, page_id
        error: BaseException | None = None
        try:
            response: Response | tuple[int, str]
            try:
                ctx.push()
                response = self._dispatch(ctx, page, batch)
            except Exception as exc:
                error = exc
                response = app.handle_exception(exc)
            except BaseException:
                error = sys.exc_info()[1]
                raise
            return response
        finally:
            if error is not None and app.should_ignore_error(error):
                error = None
            ctx.pop(error)

    def _dispatch(
        self, ctx: RequestContext, page: LivePage, batch: Batch
    ) -> Response | tuple[int, str]:
        """``Flask.full_dispatch_request`` with the view's last two lines."""
        app = self.app
        app._got_first_request = True
        try:
            request_started.send(app, _async_wrapper=app.ensure_sync)
            rv: Any = app.preprocess_request()
            if rv is None:
                status, reply = page.receive(batch)
                if self._nothing_to_finalize(ctx):
                    return status, reply
                rv = Response(reply, status, mimetype="application/json")
        except Exception as exc:
            rv = app.handle_user_exception(exc)
        return app.finalize_request(rv)

    def _nothing_to_finalize(self, ctx: RequestContext) -> bool:
        """Whether ``finalize_request`` would only add ``Vary: Cookie``."""
        app = self.app
        if ctx._after_request_functions or request_finished.receivers:
            return False
        funcs = app.after_request_funcs
        if funcs and (funcs.get(None) or funcs.get("athena")):
            return False
        sess, interface = ctx.session, app.session_interface
        if interface.is_null_session(sess):
            return True
        if not sess:
            return not sess.modified  # else the cookie is deleted
        return not interface.should_set_cookie(app, sess)


def install(app: Flask, state: AthenaState) -> bool:
    """Put :class:`FastCalls` around ``app.wsgi_app``; return whether it did.

    Only around Flask's own ``wsgi_app``: a middleware the app already put
    there (``ProxyFix``...) must run first, since it may change the scheme
    and host the Origin check compares with. Middleware added after
    ``init_app`` wraps this one and runs first anyway.
    """
    if "wsgi_app" in vars(app):
        logger.info(
            "flask_athena: app.wsgi_app is already wrapped; ATHENA_FAST_CALLS is off "
            "(call init_app before adding WSGI middleware)"
        )
        return False
    app.wsgi_app = FastCalls(app, state, app.wsgi_app)  # type: ignore[method-assign]
    return True
