"""Operations: the events that metrics, the inspector, the CLI and the logs share.

flask_athena's core announces what happens through the blinker signals of
:mod:`flask_athena.signals`. The four that fire per message or per call
(``call-received``, ``call-completed``, ``remote-call-sent``,
``messages-sent``) are sent only when an app connected a receiver; the core
counts those into the metrics itself (:attr:`AthenaState.metrics
<flask_athena.state.AthenaState.metrics>`). For every other signal this module
connects **one receiver per signal, once per process** (when flask_athena is
imported, so the set of receivers never changes afterwards) and hands each
event to the per-app :class:`Ops` kept on the app state (``app.extensions["athena"].ops``):

- a structured log record on the ``flask_athena.events`` logger (a child of
  ``flask_athena``) with stable ``extra`` fields (README "Running it in
  production" lists them);
- the Prometheus metrics when ``ATHENA_METRICS`` is on (:mod:`.metrics`,
  imported only then);
- a bounded list of recent errors and a wake-up for live inspector pages;
- with a broker spanning workers, a report of this worker's pages
  (:mod:`.snapshot`) written every ``ATHENA_REPORT_INTERVAL`` seconds, which
  the inspector and ``flask athena pages`` read for every worker (the
  broker's :meth:`~flask_athena.broker.WorkerLink.reports`).

Nothing here touches private state of the core: it reads the public
attributes of :class:`~flask_athena.state.AthenaState`,
:class:`~flask_athena.page.LivePage` and
:class:`~flask_athena.element.LiveElement`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Any

from flask import Flask

from . import signals
from .errors import AthenaError, ConfigurationError
from .snapshot import page_ref, presence_count, worker_snapshot

if TYPE_CHECKING:
    from .broker import WorkerReports
    from .element import LiveElement
    from .metrics import AthenaMetrics
    from .page import LivePage
    from .state import AthenaState

#: Structured event records go here (a child of ``flask_athena``).
event_logger = logging.getLogger("flask_athena.events")
logger = logging.getLogger("flask_athena")

#: How many recent errors each worker keeps for the inspector.
RECENT_ERRORS = 50

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def error_code(error: BaseException | None) -> str:
    """The wire code an error reaches the browser with (``"ok"`` for none)."""
    if error is None:
        return "ok"
    if isinstance(error, AthenaError):
        return error.code
    return "remote-error"  # user code raised: the browser gets a generic RemoteError


class Ops:
    """Per-app operations state: recent errors, metrics, live views, reports."""

    def __init__(self, app: Flask, state: AthenaState) -> None:
        self.app = app
        self.state = state
        self.metrics_enabled = _flag(app.config, "ATHENA_METRICS")
        interval = app.config["ATHENA_REPORT_INTERVAL"]
        if isinstance(interval, str):
            try:
                interval = float(interval)
            except ValueError:
                interval = None
        if (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not (0 <= interval < 3600)
        ):
            raise ConfigurationError(
                "ATHENA_REPORT_INTERVAL must be a number of seconds in [0, 3600) "
                f"(0: no worker reports), got {app.config['ATHENA_REPORT_INTERVAL']!r}"
            )
        #: Seconds between this worker's reports to the others (0: none).
        self.report_interval = float(interval)
        self.metrics: AthenaMetrics | None = None
        if self.metrics_enabled:
            from .metrics import process_metrics  # prometheus_client only when enabled

            self.metrics = process_metrics()
        #: The latest errors seen by this worker, newest last.
        self.errors: deque[dict[str, Any]] = deque(maxlen=RECENT_ERRORS)
        #: Called (no arguments) when this worker's pages or streams change.
        self.listeners: set[Callable[[], None]] = set()
        #: The monotonic time this worker's operations started.
        self.started = monotonic()
        #: This worker's reports to the others (a broker spanning workers), else None.
        self.reports: WorkerReports | None = None
        link = state.broker.link
        if link is not None and self.report_interval > 0:
            self.reports = link.reports(self.report, self.report_interval)

    # -- what the inspector and the CLI show -----------------------------------

    def snapshot(self) -> dict[str, Any]:
        """This worker's live view (:func:`~flask_athena.snapshot.worker_snapshot`).

        Pure reads of public state; safe from any greenlet of the worker.
        """
        return worker_snapshot(self.state, self.started, self.errors)

    def report(self) -> dict[str, Any]:
        """The snapshot this worker reports to the others (run by the broker's
        report loop); the loops' gauges are updated with each."""
        snapshot = self.snapshot()
        if self.metrics is not None:
            self.metrics.broker_loops(snapshot["broker_loops"])
        return snapshot

    def workers(self) -> list[dict[str, Any]]:
        """Every worker's snapshot: this one live, the others from their reports
        (blocks for the broker's round trip)."""
        mine = self.snapshot()
        if self.reports is None:
            return [mine]
        self.reports.ensure_started()
        others = [r for r in self.reports.read_all() if r.get("worker") != mine["worker"]]
        return [mine, *sorted(others, key=lambda r: (r.get("host", ""), r.get("pid", 0)))]

    # -- events --------------------------------------------------------------

    def changed(self) -> None:
        """Tell live views that this worker's pages or streams changed."""
        for listener in list(self.listeners):
            try:
                listener()
            except Exception:  # a view's bug must not break the page that changed
                logger.exception("flask_athena: inspector listener failed")

    def record_error(self, kind: str, code: str, detail: str) -> None:
        """Keep one error for the inspector (the newest :data:`RECENT_ERRORS`). Never blocks."""
        self.errors.append({"time": time.time(), "kind": kind, "code": code, "detail": detail})

    def shutdown(self) -> None:
        """Stop this app's background work (the report writer)."""
        self.listeners.clear()
        if self.reports is not None:
            self.reports.stop()


def _flag(config: Any, key: str) -> bool:
    value = config[key]
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        value = value.strip().lower() in _TRUE  # from config_from_env()
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, got {value!r}")
    return value


# -- setup --------------------------------------------------------------------


def init_app(app: Flask, state: AthenaState) -> None:
    """Create the app's :class:`Ops` (called by ``Athena.init_app``)."""
    state.ops = Ops(app, state)
    from .cli import athena_cli

    app.cli.add_command(athena_cli)
    # No before_request hook to start the report writer: it would take the
    # results lane (flask_athena.lane) off for every POST. The writer
    # starts in each worker process (after gunicorn's fork) with its first
    # page or stream instead.


def ops_for(app: Flask) -> Ops:
    """The app's :class:`Ops`; ``RuntimeError`` naming the fix when missing."""
    state = app.extensions.get("athena")
    ops = getattr(state, "ops", None)
    if not isinstance(ops, Ops):
        raise RuntimeError(
            "flask_athena is not registered on this app. Did you forget to call init_app(app)?"
        )
    return ops


def shutdown(app: Flask) -> None:
    """Stop what :func:`init_app` started for ``app``."""
    ops = getattr(app.extensions.get("athena"), "ops", None)
    if isinstance(ops, Ops):
        ops.shutdown()


# -- the receivers (connected once, below) -----------------------------------


def _ops(sender: Any) -> Ops | None:
    extensions = getattr(sender, "extensions", None)
    if extensions is None:
        return None
    ops = getattr(extensions.get("athena"), "ops", None)
    return ops if isinstance(ops, Ops) else None


_NO_PAGE: Any = object()


def _log(level: int, message: str, event: str, page: Any = _NO_PAGE, **fields: Any) -> None:
    # The page's hash is computed only when the record is wanted.
    if event_logger.isEnabledFor(level):
        extra: dict[str, Any] = {"athena_event": event}
        if page is not _NO_PAGE:
            extra["athena_page"] = page_ref(page)
        extra.update({f"athena_{key}": value for key, value in fields.items()})
        event_logger.log(level, message, extra=extra)


def _opened(sender: Any, what: str, page: LivePage | None) -> Ops | None:
    """What a page or a stream opening shares: the log record, the reports
    started in this process (after gunicorn's fork), live views told."""
    ops = _ops(sender)
    if ops is None:
        return None
    _log(logging.DEBUG, f"{what} opened", f"{what}-opened", page=page)
    if ops.reports is not None:
        ops.reports.ensure_started()
    ops.changed()
    return ops


def _on_page_opened(sender: Any, page: LivePage, **extra: Any) -> None:
    ops = _opened(sender, "page", page)
    if ops is not None and ops.metrics is not None:
        ops.metrics.page_opened()


def _on_page_connected(sender: Any, page: LivePage, first: bool = False, **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.DEBUG, "page connected", "page-connected", page=page, first=first)
    ops.changed()


def _on_page_disconnected(sender: Any, page: LivePage, **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.DEBUG, "page disconnected", "page-disconnected", page=page)
    ops.changed()


def _on_page_closed(sender: Any, page: LivePage, reason: str = "", **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.DEBUG, "page closed", "page-closed", page=page, reason=reason)
    if ops.metrics is not None:
        ops.metrics.page_closed(page, reason)
    ops.changed()


def _on_call_failed(
    sender: Any,
    page: LivePage,
    element: LiveElement | None = None,
    method: str = "",
    error: BaseException | None = None,
    **extra: Any,
) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    code = error_code(error)
    # The method name comes from the browser: logs and the inspector show it
    # only when the element exposes it (a user value otherwise).
    shown = method if element is not None and _exposes(element, method) else "(unknown)"
    _log(logging.INFO, "call failed", "call-failed", page=page, method=shown, code=code)
    ops.record_error("call", code, f"{type(element).__name__ if element else '?'}.{shown}")
    if ops.metrics is not None:
        ops.metrics.call_ended(page, element, method, code)


def _on_stream_opened(sender: Any, page: LivePage | None = None, **extra: Any) -> None:
    ops = _opened(sender, "stream", page)
    if ops is not None and ops.metrics is not None:
        ops.metrics.stream_opened()


def _on_stream_closed(sender: Any, page: LivePage | None = None, **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.DEBUG, "stream closed", "stream-closed", page=page)
    if ops.metrics is not None:
        ops.metrics.stream_closed()
    ops.changed()


def _on_stream_cut(
    sender: Any, page: LivePage | None = None, reason: str = "", **extra: Any
) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.INFO, "event stream cut", "stream-cut", page=page, reason=reason)
    ops.record_error("stream-cut", "stream-cut", reason)
    if ops.metrics is not None:
        ops.metrics.stream_cut(reason)


def _on_page_gone(sender: Any, reason: str = "", **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.INFO, "browser told its page is gone", "page-gone", reason=reason)
    if reason != "closed":  # "closed": the browser closed it itself (its tab left)
        ops.record_error("gone", "gone", reason)
    if ops.metrics is not None:
        ops.metrics.gone(reason)


def _on_post_forwarded(sender: Any, kind: str = "", status: int = 0, **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.DEBUG, "POST forwarded to the owner", "post-forwarded", kind=kind, status=status)
    if ops.metrics is not None:
        ops.metrics.post_forwarded(kind, status)


def _on_broker_error(
    sender: Any, operation: str = "", error: BaseException | None = None, **extra: Any
) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    what = type(error).__name__ if error is not None else "?"
    # INFO: the broker's own warning already says it in words.
    _log(logging.INFO, "broker error", "broker-error", operation=operation, error=what)
    ops.record_error("broker", operation, what)
    if ops.metrics is not None:
        ops.metrics.broker_error(operation)


def _on_broker_reconnected(sender: Any, **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None:
        return
    _log(logging.INFO, "broker reconnected", "broker-reconnected")
    if ops.metrics is not None:
        ops.metrics.broker_reconnected()


def _on_presence_changed(sender: Any, topic: str = "", **extra: Any) -> None:
    ops = _ops(sender)
    if ops is None or not isinstance(topic, str) or not topic:
        return
    if ops.metrics is not None:
        members = presence_count(ops.state, topic)
        if members is not None:
            ops.metrics.presence_members(topic, members)
    ops.changed()


def _exposes(element: LiveElement, method: str) -> bool:
    from .registry import exposed_names

    return method in exposed_names(type(element))


_RECEIVERS: list[tuple[str, Callable[..., None]]] = [
    ("page_opened", _on_page_opened),
    ("page_connected", _on_page_connected),
    ("page_disconnected", _on_page_disconnected),
    ("page_closed", _on_page_closed),
    ("call_failed", _on_call_failed),
    ("stream_opened", _on_stream_opened),
    ("stream_closed", _on_stream_closed),
    ("stream_cut", _on_stream_cut),
    ("page_gone", _on_page_gone),
    ("post_forwarded", _on_post_forwarded),
    ("broker_error", _on_broker_error),
    ("broker_reconnected", _on_broker_reconnected),
    ("presence_changed", _on_presence_changed),
]


def _connect() -> None:
    # Once per process, at import: strong references (module functions live
    # as long as the process) and a receiver set that tests can compare.
    for name, receiver in _RECEIVERS:
        signal = getattr(signals, name, None)
        if signal is not None:  # presence_changed exists once presence is in
            signal.connect(receiver, weak=False)


_connect()
