"""The inspector: an opt-in page showing every worker's live pages, as a live page.

Off by default. An app turns it on with its own access check::

    from flask_athena.inspector import Inspector

    Inspector(app, authorize=lambda: current_user.is_admin)   # after Athena(app)

``authorize`` is called with no arguments inside each request to the
inspector (use ``flask.request``, ``session``, ``g``...); when it returns a
false value the answer is ``403`` (JSON, code ``forbidden``). Without
``authorize`` nothing is served: every inspector URL answers ``404`` (JSON,
code ``not-found``), so registering the blueprint alone exposes nothing.

Routes, under ``url_prefix`` (default ``/_athena/inspector``):

- ``/``: the inspector page, itself a flask_athena live page whose widget
  the server updates as pages open, connect, disconnect and close (and every
  ``ATHENA_REPORT_INTERVAL`` seconds, for other workers' changes);
- ``/workers.json``: the same view as JSON (every worker's snapshot, see
  :meth:`flask_athena.ops.Ops.snapshot`).

With a broker spanning workers the other workers' views come from their
reports (:meth:`flask_athena.broker.WorkerLink.reports`), so the inspector
shows every worker whichever worker serves it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import gevent
from flask import Blueprint, Flask, Response, current_app, jsonify, render_template
from gevent.event import Event
from markupsafe import Markup

from ..element import LiveElement
from ..ops import Ops, ops_for

logger = logging.getLogger("flask_athena")

#: The JS module of the inspector's widget (served by flask_athena's blueprint).
JS_MODULE = "AthenaInspector"
_HERE = os.path.dirname(__file__)
#: Shortest time between two pushes to one inspector page (bursts coalesce).
MIN_PUSH_INTERVAL = 0.25
#: Longest time between two pushes (other workers' changes arrive by polling).
MAX_PUSH_INTERVAL = 2.0

blueprint = Blueprint(
    "athena_inspector",
    __name__,
    static_folder="static",
    template_folder="templates",
)


class Inspector:
    """Registers the inspector blueprint on an app (``Inspector(app, authorize=...)``).

    :param authorize: called with no arguments in each inspector request;
        a false value answers 403. ``None`` (the default) serves nothing (404).
    :param url_prefix: where the inspector lives.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        authorize: Callable[[], Any] | None = None,
        url_prefix: str = "/_athena/inspector",
    ) -> None:
        self.authorize = authorize
        self.url_prefix = url_prefix
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register on ``app`` (after ``Athena``'s ``init_app``)."""
        ops = ops_for(app)  # names the fix when Athena is missing
        if "athena.inspector" in app.extensions:
            raise RuntimeError("the inspector is already registered on this app")
        app.extensions["athena.inspector"] = self
        ops.state.athena.register_module(JS_MODULE, os.path.join(_HERE, "static", "inspector.js"))
        app.register_blueprint(blueprint, url_prefix=self.url_prefix)


def _refuse(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


@blueprint.before_request
def _check_access() -> Response | None:
    inspector = current_app.extensions.get("athena.inspector")
    if not isinstance(inspector, Inspector) or inspector.authorize is None:
        return _refuse(404, "not-found", "Not found.")
    if not inspector.authorize():
        return _refuse(403, "forbidden", "The inspector needs authorization.")
    return None


@blueprint.get("/")
def index() -> str:
    """The inspector page: a live page holding one :class:`InspectorView` (request greenlet)."""
    ops = ops_for(current_app)
    page = ops.state.athena.page()
    view = page.add(InspectorView(ops))
    return render_template("athena_inspector/index.html", page=page, view=view)


@blueprint.get("/workers.json")
def workers() -> Response:
    """Every worker's snapshot as JSON (blocks for the broker's round trip, if any)."""
    return jsonify({"workers": ops_for(current_app).workers()})


class InspectorView(LiveElement):
    """The inspector's widget: the server pushes every worker's view to it.

    While its page lives, one greenlet pushes the view when this worker's
    pages or streams change (coalesced to one push per
    :data:`MIN_PUSH_INTERVAL`) and at least every :data:`MAX_PUSH_INTERVAL`
    seconds; it stops when the page closes or the widget is detached.
    """

    js_class = f"{JS_MODULE}.Inspector"
    tag = "section"

    def __init__(self, ops: Ops) -> None:
        super().__init__()
        self._ops = ops
        self._wake = Event()
        self._pusher: gevent.Greenlet | None = None

    def render(self) -> str:
        """The widget's static markup; the browser fills it from the pushed views."""
        return str(
            Markup(
                '<div class="summary" aria-live="polite"></div>'
                '<div class="workers"></div>'
                '<p class="hint">Updated live. Page ids are never shown: a page is named by '
                "a hash of its id.</p>"
            )
        )

    def initial_arguments(self) -> list[Any]:
        """Every worker's view at render time (blocks like :meth:`Ops.workers`)."""
        return [self._ops.workers()]

    def connected(self) -> None:
        """Start the pusher greenlet and listen for this worker's changes."""
        self._ops.listeners.add(self._wake.set)
        self._pusher = gevent.spawn(self._push_forever)

    def disconnected(self, reason: str) -> None:
        """Stop pushing (the stream is gone; a reconnect starts again)."""
        self._stop()

    def detached(self) -> None:
        """Stop pushing: the widget left its page."""
        self._stop()

    def _stop(self) -> None:
        self._ops.listeners.discard(self._wake.set)
        pusher, self._pusher = self._pusher, None
        if pusher is not None and pusher is not gevent.getcurrent():
            pusher.kill(block=True, timeout=2)

    def _push_forever(self) -> None:
        interval = min(MAX_PUSH_INTERVAL, self._ops.report_interval or MAX_PUSH_INTERVAL)
        while self.page is not None and not self.page.closed:
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self.call_remote("update", self._ops.workers())
            except Exception as exc:  # one failed push (broker down) must not end the view
                logger.warning("flask_athena: inspector update failed (%s)", exc)
                current = self.page
                if current is None or current.closed:
                    return
            gevent.sleep(MIN_PUSH_INTERVAL)
