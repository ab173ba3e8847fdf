"""Prometheus metrics (``ATHENA_METRICS = True``; optional extra ``metrics``).

Imported only when an app turns metrics on, so ``prometheus_client`` is an
optional dependency (``pip install 'flask_athena[metrics]'``). The metrics
live in prometheus_client's default registry, like any instrumented library's,
and count for every app of the process; :mod:`flask_athena.ops` feeds them
from flask_athena's signals.

Exposing them is the app's choice, the way prometheus_client recommends::

    from flask_athena.metrics import metrics_view
    app.add_url_rule("/metrics", view_func=metrics_view)     # a route the app guards

or mount :func:`make_wsgi_app` with werkzeug's ``DispatcherMiddleware``.
Both read every gunicorn worker's values when ``PROMETHEUS_MULTIPROC_DIR``
is set (prometheus_client's multiprocess mode; the gauges then sum the live
workers' values). README "Running it in production" has the gunicorn setup.

**Labels are bounded**: never a page id, a topic or anything a browser
sends. A browser → server method is named only when the element exposes it
(else ``(unknown)``); server → browser method names come from the app's own
code, and at most :data:`MAX_METHODS` distinct ones are kept per direction
(the rest count as ``(other)``); reasons are mapped onto fixed sets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal

import gevent

try:
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
    from prometheus_client import (
        REGISTRY,
        CollectorRegistry,
        Counter,
        Gauge,
        Histogram,
        generate_latest,
        multiprocess,
    )
    from prometheus_client import make_wsgi_app as _make_wsgi_app
except ImportError as exc:  # pragma: no cover - the install
    raise RuntimeError(
        "ATHENA_METRICS needs prometheus_client: pip install 'flask_athena[metrics]'"
    ) from exc

from flask import Response

from .errors import AthenaError

if TYPE_CHECKING:
    from werkzeug.wsgi import WSGIApplication  # type: ignore[attr-defined]

    from .element import LiveElement
    from .page import LivePage
    from .remote import RemoteCall

#: Distinct method label values kept per direction; later ones are ``(other)``.
MAX_METHODS = 200
#: Distinct topic label values of the presence gauge; later ones are ``(other)``.
MAX_TOPICS = 100
#: Call latency buckets, in seconds (a browser round trip is the slow case).
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: Why pages close (``LivePage.close`` reasons) and why browsers are told a
#: page is gone; anything else is ``other``.
CLOSE_REASONS = frozenset({"closed", "timeout", "evicted", "shutdown", "lost"})
GONE_REASONS = CLOSE_REASONS | {"unknown-page", "outbox-trimmed", "owner-gone"}
#: ``flask_athena.stream`` cut reasons -> label.
CUT_REASONS = {
    "write blocked": "write-blocked",
    "too far behind": "too-far-behind",
    "replaced by a newer stream": "replaced",
}
BROKER_OPERATIONS = frozenset(
    {"connect", "request", "poll", "write", "heartbeat", "subscribe", "inbox"}
)


class BoundedLabel:
    """At most ``limit`` distinct values of one label; later ones map to ``overflow``."""

    def __init__(self, limit: int, overflow: str = "(other)") -> None:
        self.limit = limit
        self.overflow = overflow
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return self.overflow
        self.seen.add(value)
        return value


class AthenaMetrics:
    """The ``athena_*`` metrics of this process (one object: :func:`process_metrics`)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        def counter(name: str, doc: str, *labels: str) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(
            name: str, doc: str, *labels: str, mode: Literal["livesum", "mostrecent"] = "livesum"
        ) -> Gauge:
            # livesum: in multiprocess mode a scrape adds up the live workers.
            return Gauge(name, doc, labels, registry=registry, multiprocess_mode=mode)

        self.pages_open = gauge("athena_pages_open", "Live pages owned by the worker")
        self.streams_open = gauge("athena_streams_open", "Event streams open on the worker")
        self.pages_opened = counter("athena_pages_opened", "Pages created")
        self.pages_closed = counter("athena_pages_closed", "Pages closed, by reason", "reason")
        self.published = counter(
            "athena_messages_published",
            "Server → browser messages put in page outboxes (counted when the owner "
            "next sees the page: a write, a call, a scrape or its close)",
        )
        self.delivered = counter(
            "athena_messages_delivered", "Messages handed to event stream writes"
        )
        self.replayed = counter(
            "athena_messages_replayed",
            "Messages sent again from the outbox when a stream resumed (Last-Event-ID)",
        )
        self.calls = counter(
            "athena_calls",
            "Calls by direction (browser: browser → server, server: server → browser), "
            "method and outcome code",
            *("direction", "method", "code"),
        )
        self.call_latency = Histogram(
            "athena_call_duration_seconds",
            "Call latency: an exposed method's run time (browser) or the browser's "
            "answer time (server)",
            ["direction"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stream_cuts = counter(
            "athena_stream_cuts", "Slow event streams cut, by reason", "reason"
        )
        self.gones = counter(
            "athena_gone", "Browsers told their page is gone (they reload)", "reason"
        )
        self.forwarded = counter(
            "athena_forwarded_posts",
            "POSTs forwarded to the worker owning the page (a broker spanning workers)",
            *("kind", "status"),
        )
        self.broker_errors = counter(
            "athena_broker_errors", "Broker failures by operation", "operation"
        )
        self.broker_reconnects = counter(
            "athena_broker_reconnects", "Broker subscriber reconnections"
        )
        self.loops_down = gauge(
            "athena_broker_loops_down",
            "Broker background loops not running (updated with each worker report)",
        )
        self.loop_restarts = gauge(
            "athena_broker_loop_restarts",
            "Times the broker's background loops died and were restarted",
        )
        self.presence = gauge(
            "athena_presence_members", "Presence keys per topic", "topic", mode="mostrecent"
        )
        self._methods = {"browser": BoundedLabel(MAX_METHODS), "server": BoundedLabel(MAX_METHODS)}
        self._topics = BoundedLabel(MAX_TOPICS)
        # Browser → server calls run one at a time per greenlet: the start of
        # the call running in each greenlet.
        self._started: dict[Any, float] = {}
        # page -> outbox seq already counted as published.
        self._published: dict[LivePage, int] = {}

    # -- pages and streams ----------------------------------------------------

    def page_opened(self) -> None:
        """A page opened on this worker."""
        self.pages_open.inc()
        self.pages_opened.inc()

    def page_closed(self, page: LivePage, reason: str) -> None:
        """``page`` closed for ``reason``; its last messages are counted."""
        self.pages_open.dec()
        self.pages_closed.labels(reason if reason in CLOSE_REASONS else "other").inc()
        self._count_published(page)
        self._published.pop(page, None)

    def stream_opened(self) -> None:
        """An event stream opened on this worker."""
        self.streams_open.inc()

    def stream_closed(self) -> None:
        """An event stream of this worker ended."""
        self.streams_open.dec()

    def messages_sent(self, page: LivePage | None, count: int, replayed: bool) -> None:
        """``count`` messages went to a stream's write (``replayed``: a resume)."""
        self.delivered.inc(count)
        if replayed:
            self.replayed.inc(count)
        if page is not None:
            self._count_published(page)

    def refresh(self, pages: Iterable[LivePage]) -> None:
        """Count what ``pages`` published since last seen (before a scrape)."""
        for page in pages:
            self._count_published(page)

    def _count_published(self, page: LivePage) -> None:
        seq = page.outbox.last_seq
        before = self._published.get(page, 0)
        if seq > before:
            self.published.inc(seq - before)
            if not page.closed:
                self._published[page] = seq

    # -- calls ---------------------------------------------------------------

    def call_started(self) -> None:
        """A browser → server call starts in the current greenlet."""
        self._started[gevent.getcurrent()] = perf_counter()

    def call_ended(
        self, page: LivePage, element: LiveElement | None, method: str, code: str
    ) -> None:
        """The call running in the current greenlet ended with ``code``."""
        started = self._started.pop(gevent.getcurrent(), None)
        if started is not None:
            self.call_latency.labels("browser").observe(perf_counter() - started)
        label = "(unknown)"
        if element is not None:
            from .registry import exposed_names

            if method in exposed_names(type(element)):
                label = self._methods["browser"](method)
        self.calls.labels("browser", label, code).inc()

    def remote_call_sent(self, page: LivePage, call: RemoteCall) -> None:
        """A server → browser call was sent; counted with its latency when it settles."""
        started = perf_counter()
        method = self._methods["server"](call.method)
        self._count_published(page)

        def ended(call: RemoteCall) -> None:
            error = call.error
            code = "ok" if error is None else (
                error.code if isinstance(error, AthenaError) else "error"
            )  # fmt: skip
            self.calls.labels("server", method, code).inc()
            if code in ("ok", "remote-error"):  # the browser answered
                self.call_latency.labels("server").observe(perf_counter() - started)

        call.link(ended)

    # -- failures ------------------------------------------------------------

    def stream_cut(self, reason: str) -> None:
        """A slow event stream was cut for ``reason``."""
        self.stream_cuts.labels(CUT_REASONS.get(reason, "other")).inc()

    def gone(self, reason: str) -> None:
        """A browser was told its page is gone, for ``reason``."""
        self.gones.labels(reason if reason in GONE_REASONS else "other").inc()

    def post_forwarded(self, kind: str, status: int) -> None:
        """A POST of ``kind`` was forwarded to the owner and answered ``status``."""
        label = str(status) if isinstance(status, int) and 100 <= status < 600 else "other"
        self.forwarded.labels(kind if kind in ("calls", "close") else "other", label).inc()

    def broker_error(self, operation: str) -> None:
        """The broker failed in ``operation``."""
        self.broker_errors.labels(operation if operation in BROKER_OPERATIONS else "other").inc()

    def broker_reconnected(self) -> None:
        """The broker's subscriber connected again."""
        self.broker_reconnects.inc()

    def broker_loops(self, loops: list[dict[str, Any]]) -> None:
        """Set the loop gauges from a snapshot's ``broker_loops``."""
        self.loops_down.set(sum(1 for loop in loops if not loop["alive"]))
        self.loop_restarts.set(sum(int(loop["restarts"]) for loop in loops))

    def presence_members(self, topic: str, members: int) -> None:
        """``topic`` has ``members`` presence keys now."""
        self.presence.labels(self._topics(topic)).set(members)


_process_metrics: AthenaMetrics | None = None


def process_metrics() -> AthenaMetrics:
    """This process's metrics, created (and registered) on first use."""
    global _process_metrics
    if _process_metrics is None:
        _process_metrics = AthenaMetrics()
    return _process_metrics


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when set (prometheus_client's multiprocess mode)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def exposition_registry() -> CollectorRegistry:
    """The registry to scrape: every worker's values in multiprocess mode.

    prometheus_client's documented way: a fresh registry with a
    ``MultiProcessCollector`` per scrape, else the default registry.
    """
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def _refresh_current_app() -> None:
    from flask import current_app, has_app_context

    if has_app_context() and _process_metrics is not None:
        state = current_app.extensions.get("athena")
        if state is not None:
            _process_metrics.refresh(list(state.pages.values()))


def metrics_view() -> Response:
    """A Flask view answering in Prometheus' text format (mount it where you like)."""
    _refresh_current_app()
    return Response(generate_latest(exposition_registry()), mimetype=CONTENT_TYPE)


def make_wsgi_app() -> WSGIApplication:
    """prometheus_client's WSGI app over :func:`exposition_registry` (for
    ``DispatcherMiddleware``); in multiprocess mode the registry is built per scrape."""
    if multiprocess_dir():

        def app(environ: Any, start_response: Any) -> Any:
            return _make_wsgi_app(exposition_registry())(environ, start_response)

        return app
    return _make_wsgi_app(REGISTRY)
