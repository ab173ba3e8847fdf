"""Per-app state: the pages this worker owns, sessions, limits, the reaper."""

from __future__ import annotations

import logging
import secrets
from time import monotonic
from typing import TYPE_CHECKING

import gevent
from flask import Flask, has_request_context, request

from . import signals
from .broker import create_broker
from .broker.loops import Loop
from .config import AthenaConfig
from .errors import TooManyPages
from .limits import Limits
from .page import LivePage
from .topics import Topics

if TYPE_CHECKING:
    from .broker import Broker, RemotePages
    from .extension import Athena
    from .metrics import AthenaMetrics
    from .ops import Ops
    from .presence import PresenceBackend
    from .stream import StreamBody

logger = logging.getLogger("flask_athena")

#: Key in the Flask session that binds pages to the browser's session.
SESSION_KEY = "_athena"


class AthenaState:
    """What ``init_app`` stores in ``app.extensions["athena"]``."""

    def __init__(self, app: Flask, config: AthenaConfig, athena: Athena) -> None:
        self.app = app
        self.config = config
        #: The extension object (for code that serves the app: the inspector).
        self.athena = athena
        #: The JS modules registered on :attr:`athena` (one table for its apps).
        self.modules = athena.js_modules
        #: Outboxes and broadcasts, shared with the other workers when
        #: ``ATHENA_BROKER_URL`` names a broker (see :mod:`flask_athena.broker`).
        self.broker: Broker = create_broker(config, app)
        self.broker.on_lost = self.page_lost
        #: Which of this worker's elements joined which topic.
        self.topics = Topics(self.broker)
        #: Serves the endpoints of pages other workers own (set up in
        #: ``init_app`` when the broker has a link to them), else None.
        self.remote: RemotePages | None = None
        #: page id -> page, for every open page this worker owns.
        self.pages: dict[str, LivePage] = {}
        #: session key -> its pages, oldest first.
        self.session_pages: dict[str, dict[str, LivePage]] = {}
        #: session key -> number of open event streams.
        self.session_streams: dict[str, int] = {}
        #: Every event stream this worker serves (its own pages' and, with
        #: a broker spanning workers, other workers'): the reaper cuts those that cannot keep up.
        self.streams: set[StreamBody] = set()
        #: Pages and streams per client address and per worker (DESIGN §11).
        self.limits = Limits(config)
        #: Closes idle pages, expires calls, cuts slow streams (a supervised loop).
        self._reaper = Loop("reaper", self._reap_forever)
        #: Who is in which topic (``athena.presence``), kept where the broker says.
        self.presence: PresenceBackend = self.broker.create_presence(self)
        #: A POST passed the Origin check as same-origin / the proxy hint was
        #: logged (see ``endpoint.hint_proxy_setup``).
        self.origin_accepted = False
        self.proxy_hint_logged = False
        #: Logs, metrics, worker reports (set by :func:`flask_athena.ops.init_app`).
        self.ops: Ops | None = None

    @property
    def metrics(self) -> AthenaMetrics | None:
        """The app's Prometheus metrics (``ATHENA_METRICS``), else ``None``.

        The hot paths (a call, a server → browser call, a stream's write)
        count into them directly and send their signal only when a receiver
        is connected: one blinker dispatch each, with nobody listening, was
        a tenth of a fan-out's CPU in the benchmark.
        """
        ops = self.ops
        return ops.metrics if ops is not None else None

    # -- pages --------------------------------------------------------------

    def open_page(self, session_key: str) -> LivePage:
        """Create a page for ``session_key``, enforcing the page limits.

        At a limit (per session, per client address, per worker; see
        :mod:`flask_athena.limits`) the oldest page *without* a stream is
        closed to make room (a reload loop leaves such pages behind); when
        every page is live, :class:`TooManyPages` (429).
        """
        pages = self.session_pages.get(session_key, {})
        if len(pages) >= self.config.max_pages_per_session:
            idle = next((p for p in pages.values() if not p.stream_attached), None)
            if idle is None:
                raise TooManyPages()
            idle.close("evicted")
        # Without a cookie every GET is a new session: the client and worker
        # limits are the ones a flood meets (flask_athena.limits).
        client = self.limits.current_client()
        self.limits.make_room_for_page(client, self.pages)
        page = LivePage(self, session_key)
        # Other workers must find the owner before the browser asks them.
        self.broker.register_page(page.id, page.outbox)
        self.pages[page.id] = page
        self.session_pages.setdefault(session_key, {})[page.id] = page
        self.limits.page_opened(page, client)
        self.ensure_reaper()
        self.presence.start()
        signals.page_opened.send(self.app, page=page)
        return page

    def forget(self, page: LivePage) -> None:
        """Drop a closed page from every table (called by ``LivePage.close``)."""
        self.pages.pop(page.id, None)
        self.limits.page_closed(page)
        pages = self.session_pages.get(page.session_key)
        if pages is not None:
            pages.pop(page.id, None)
            if not pages:
                del self.session_pages[page.session_key]

    def page_lost(self, page_id: str, what: str) -> None:
        """The broker's :attr:`~flask_athena.broker.Broker.on_lost`: a page's
        shared state vanished (``"lost"``: close it) or the worker serving its
        stream died (``"reader"``: the stream is detached). Runs in a greenlet
        of the broker's; blocks while the page's hooks run."""
        page = self.pages.get(page_id)
        if page is None:
            return
        if what == "reader":
            page.detach_stream(page.stream_generation)
        else:
            page.close("lost")

    @staticmethod
    def new_session_key() -> str:
        """A fresh random key binding a browser session to its pages."""
        return secrets.token_urlsafe(16)

    # -- urls ---------------------------------------------------------------

    def base_url(self) -> str:
        """The blueprint's URL prefix, under the request's script root when in a request."""
        root = request.script_root if has_request_context() else ""
        return root + self.config.url_prefix

    def module_url(self, module: str) -> str:
        """The URL of JS module ``module`` (registered, or the app's ``static/athena/``)."""
        url = self.modules.urls.get(module)
        if url is not None:
            return url
        if module in self.modules.paths:
            return f"{self.base_url()}/modules/{module}.js"
        root = request.script_root if has_request_context() else ""
        return f"{root}{self.app.static_url_path}/athena/{module}.js"

    # -- reaper -------------------------------------------------------------

    @property
    def reaper_running(self) -> bool:
        """Whether this worker's reaper greenlet is alive."""
        return self._reaper.alive

    def ensure_reaper(self) -> None:
        """Start the reaper greenlet of this worker unless it runs (after a fork,
        it does not). Never blocks."""
        self._reaper.start()

    def _reap_forever(self) -> None:
        interval = min(self.config.page_timeout / 4, self.config.heartbeat, 5.0)
        while True:
            gevent.sleep(interval)
            try:
                self.reap(monotonic())
            except Exception:  # the reaper must outlive any bug in a hook
                logger.exception("flask_athena reaper failed")

    def reap(self, now: float) -> None:
        """Close pages idle past ``ATHENA_PAGE_TIMEOUT``; expire overdue calls;
        cut event streams that cannot keep up."""
        timeout = self.config.page_timeout
        for page in list(self.pages.values()):
            if not page.stream_attached and now - page.idle_since > timeout:
                page.close("timeout")
            else:
                page.expire_calls(now)
        for stream in list(self.streams):
            stream.check(now)

    def shutdown(self) -> None:
        """Close every page (reason ``"shutdown"``) and stop the reaper."""
        self.presence.close()  # first: the closing pages need not tell each other
        for page in list(self.pages.values()):
            page.close("shutdown")
        if not self._reaper.stop(timeout=5):
            logger.warning("flask_athena: the reaper did not stop in time")
        self.topics.clear()
        self.broker.close()
