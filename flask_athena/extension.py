"""``Athena``: the Flask extension object."""

from __future__ import annotations

import logging
from functools import partial

from flask import Flask, current_app, has_app_context, has_request_context, session
from flask.sessions import SecureCookieSessionInterface

from . import ops
from .config import DEFAULTS, AthenaConfig
from .forwarding import ClusterPages, serve_forwarded
from .lane import ResultsLane
from .modules import JSModules
from .page import LivePage
from .presence import Presence
from .protocol import JSONValue, dumps
from .sessions import CachingSessionInterface
from .state import SESSION_KEY, AthenaState
from .transport import blueprint

logger = logging.getLogger("flask_athena")


class Athena:
    """Live elements for a Flask app.

    ``Athena(app)`` or ``athena = Athena(); athena.init_app(app)``. One
    ``Athena`` object may serve several apps; per-app state lives in
    ``app.extensions["athena"]``.
    """

    def __init__(self, app: Flask | None = None) -> None:
        #: The JS modules registered with :meth:`register_module` (shared
        #: with the state of every app this object serves).
        self.js_modules = JSModules()
        self._app: Flask | None = None
        #: Who is in which topic, on every worker: ``track``, ``untrack``, ``list``.
        self.presence = Presence(self)
        if app is not None:
            self.init_app(app)
            self._app = app

    def init_app(self, app: Flask) -> None:
        """Register on ``app``: read and validate ``ATHENA_*``, add the blueprint.

        Raises :class:`RuntimeError` on a second registration on one app and
        :class:`~flask_athena.errors.ConfigurationError` for a bad setting.
        """
        if "athena" in app.extensions:
            raise RuntimeError(
                "flask_athena is already registered on this app; call init_app once per app"
            )
        for key, default in DEFAULTS.items():
            app.config.setdefault(f"ATHENA_{key}", default)
        config = AthenaConfig.from_mapping(app.config)
        state = app.extensions["athena"] = AthenaState(app, config, self)
        link = state.broker.link
        if link is not None:
            # Requests other workers forward to this one (pages it owns),
            # and this worker's answers for pages other workers own.
            link.handler = partial(serve_forwarded, state)
            state.remote = ClusterPages(state, link)
        app.register_blueprint(blueprint, url_prefix=config.url_prefix)
        if config.fast_calls and type(app.session_interface) is SecureCookieSessionInterface:
            # Flask's public hook; an app with a session interface of its
            # own keeps it (and pays the decoding it chose).
            app.session_interface = CachingSessionInterface(config.url_prefix + "/")
            if "wsgi_app" in vars(app):
                # Middleware the app already put there (ProxyFix...) must see
                # the request first: it may change the scheme and host the
                # Origin check compares with.
                logger.info(
                    "flask_athena: app.wsgi_app is already wrapped; the results lane is off "
                    "(call init_app before adding WSGI middleware)"
                )
            else:
                app.wsgi_app = ResultsLane(app, state, app.wsgi_app)  # type: ignore[method-assign]
        ops.init_app(app, state)  # logs, metrics, worker reports, the CLI

    def state(self, app: Flask | None = None) -> AthenaState:
        """The per-app state (``app``, else the current app, else the app given
        to the constructor)."""
        if app is None:
            if has_app_context():
                app = current_app._get_current_object()  # type: ignore[attr-defined]
            else:
                app = self._app
        if app is None:
            raise RuntimeError(
                "No Flask app: use this inside an app context (with app.app_context()) "
                "or pass the app to Athena(app)."
            )
        state = app.extensions.get("athena")
        if not isinstance(state, AthenaState):
            raise RuntimeError(
                "flask_athena is not registered on this app. Did you forget to call init_app(app)?"
            )
        return state

    def page(self) -> LivePage:
        """A new :class:`LivePage` for the current request, bound to its session.

        Needs a request context and ``app.secret_key`` (the session cookie
        carries the binding). Raises :class:`~flask_athena.errors.TooManyPages`
        (429) when the session has ``ATHENA_MAX_PAGES_PER_SESSION`` live pages.
        """
        if not has_request_context():
            raise RuntimeError("athena.page() needs a request: call it from a view")
        state = self.state()
        if not state.app.secret_key:
            raise RuntimeError(
                "flask_athena binds pages to the session: set app.config['SECRET_KEY']"
            )
        key = session.get(SESSION_KEY)
        if not isinstance(key, str):
            key = session[SESSION_KEY] = state.new_session_key()
        return state.open_page(key)

    def broadcast(self, topic: str, method: str, *args: JSONValue) -> int:
        """Call ``method(*args)`` on every element joined to ``topic``.

        The arguments are serialized once for all receivers (so they cannot
        contain ``LiveElement`` values). Fire-and-forget; returns the number
        of elements reached. Safe from any greenlet of the worker.

        With a broker spanning workers (``ATHENA_BROKER_URL``) it reaches
        every worker sharing it, in one order for all; it returns the number
        of workers that received it, delivers asynchronously, and raises
        :class:`~flask_athena.errors.BrokerUnavailable` when the broker is
        unreachable.
        """
        return self.state().topics.broadcast(topic, method, dumps(list(args)))

    def register_module(self, name: str, url_or_path: str) -> None:
        """Serve JS module ``name`` from a URL, or from a file the blueprint serves.

        A value naming an existing file is a path; anything else is a URL.
        Registered modules are in every page's import map.
        """
        self.js_modules.register(name, url_or_path)

    @property
    def modules(self) -> dict[str, str]:
        """module name -> URL it is served from (registered modules)."""
        return self.js_modules.urls

    @property
    def module_paths(self) -> dict[str, str]:
        """module name -> file path, for modules served by the blueprint."""
        return self.js_modules.paths

    def shutdown(self, app: Flask | None = None) -> None:
        """Close every page of ``app`` (reason ``"shutdown"``) and stop its reaper."""
        state = self.state(app)
        ops.shutdown(state.app)
        state.shutdown()
