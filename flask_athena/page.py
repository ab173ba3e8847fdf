"""``LivePage``: one browser page, a façade over its parts.

A page is created by :meth:`Athena.page` while a view renders, lives in the
worker that rendered it, and is freed when the browser leaves (beacon), after
``ATHENA_PAGE_TIMEOUT`` seconds without an event stream, or on shutdown.

Its parts, each with one reason to change:

* the element tree (here: :meth:`LivePage.add`, :meth:`LivePage.adopt`,
  :meth:`LivePage.detach_element`, the lifecycle hooks);
* rendering (:mod:`flask_athena.render`: head tags, widget markup, values);
* server → browser calls waiting for an answer (:mod:`flask_athena.remote`);
* ordering and de-duplication of browser → server calls
  (:mod:`flask_athena.sequencer`, no I/O) and running them
  (:mod:`flask_athena.dispatch`);
* the event stream's attachment (generation, connected/disconnected).

Threading model: everything runs in gevent greenlets of one OS thread, so no
locks guard plain state; the one semaphore below serialises *browser calls*,
which may block (an exposed method may wait for the browser).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING

from flask import current_app, has_app_context
from gevent.event import Event
from gevent.lock import Semaphore
from markupsafe import Markup

from . import render, signals
from .dispatch import run_message
from .element import LiveElement
from .errors import CallTimeout, ConnectionLost, PageGone, TooManyPending
from .protocol import Batch, call_message, cancel_message, detach_message
from .remote import PendingCalls, RemoteCall
from .sequencer import Answer, Sequencer, batch_reply

if TYPE_CHECKING:
    from .state import AthenaState
    from .stream import StreamBody

logger = logging.getLogger("flask_athena")


class LivePage:
    """A browser page: its widgets, its outbox and its call bookkeeping.

    Create pages with :meth:`Athena.page`; put ``{{ page.head() }}`` in the
    template's ``<head>``.
    """

    def __init__(self, state: AthenaState, session_key: str) -> None:
        self.state = state
        #: 144 random bits; the URL key of the page. Never logged.
        self.id = secrets.token_urlsafe(18)
        #: Secret sent with every POST (X-Athena-Token); never in a URL.
        self.token = secrets.token_urlsafe(18)
        #: The browser session the page belongs to (see ``state.SESSION_KEY``).
        self.session_key = session_key
        #: The page's numbered server → browser messages (see ``broker.Outbox``).
        self.outbox = state.broker.create_outbox(self.id, state.config.outbox_size)
        self.outbox.on_backlog = self.check_stream
        #: widget id -> element, for every element on the page.
        self.elements: dict[int, LiveElement] = {}
        self._next_widget = 0
        #: Server → browser calls waiting for the browser's answer.
        self.pending = PendingCalls(
            state.config.max_pending_calls, state.config.call_timeout, self._cancelled
        )
        #: Browser → server ordering and the answers kept for retried POSTs.
        self.sequencer = Sequencer()
        self._call_lock: Semaphore | None = None
        self._recorded: Event | None = None
        #: Bumped by each stream that attaches; an older stream sees the
        #: change and ends, so one page has at most one live stream.
        self.stream_generation = 0
        #: Whether an event stream (of this worker or another) is attached.
        self.stream_attached = False
        #: The event stream this worker serves for the page (None when none
        #: is open, or another worker serves it); see :meth:`serve_stream`.
        self.stream: StreamBody | None = None
        #: Whether a stream ever attached (``connected()`` hooks ran).
        self.was_connected = False
        #: ``monotonic()`` of the last POST or stream detach (the reaper's clock).
        self.idle_since = monotonic()
        #: Whether :meth:`close` ran, and why.
        self.closed = False
        self.close_reason: str | None = None

    @property
    def pending_calls(self) -> int:
        """How many server → browser calls wait for the browser's answer."""
        return len(self.pending)

    def __repr__(self) -> str:  # no id: page ids are never logged
        return f"<LivePage widgets={len(self.elements)} closed={self.closed}>"

    # -- the element tree -----------------------------------------------------

    def add(self, element: LiveElement) -> LiveElement:
        """Put ``element`` (and its children) on this page; return it."""
        if element.parent is not None and element.parent.page is not self:
            raise ValueError("add the parent to the page instead")
        self.adopt(element)
        return element

    def adopt(self, element: LiveElement) -> None:
        """Give ``element`` and its children widget ids on this page.

        Called by :meth:`add` and by :meth:`LiveElement.add` for a child of
        an element already on the page. Runs ``connected()`` at once when
        the page's stream already attached. Raises :class:`ValueError` for
        an element of another page or without ``js_class``, and
        :class:`~flask_athena.errors.PageGone` on a closed page.
        """
        if element.page is self:
            return
        if element.page is not None:
            raise ValueError(f"{element!r} is already on another page")
        if self.closed:
            raise PageGone()
        if not element.js_class:
            raise ValueError(f"{type(element).__name__} has no js_class")
        self._next_widget += 1
        element.id = self._next_widget
        element.page = self
        self.elements[element.id] = element
        for child in element.children:
            self.adopt(child)
        if self.was_connected:
            self.run_hook(element.connected)

    def detach_element(self, element: LiveElement, notify_browser: bool) -> None:
        """Take ``element`` and its children off the page, children first.

        Leaves its topics, runs ``detached()`` hooks and frees the page's
        reference; with ``notify_browser`` a ``detach`` message tells the
        browser to remove the widget. Called by :meth:`LiveElement.detach`,
        by a browser's detach and on close.
        """
        if notify_browser and not self.closed and element.id is not None:
            self.outbox.publish(detach_message(element.id))
        for child in list(element.children):
            self.detach_element(child, notify_browser=False)
        for topic in element.topics:
            element.leave(topic)
        self.state.presence.forget(element)
        if element.id is not None:
            self.elements.pop(element.id, None)
        self.run_hook(element.detached)
        if element.parent is not None and element in element.parent.children:
            element.parent.children.remove(element)
            element.parent = None
        element.page = None

    def run_hook(self, hook: Callable[..., object], *args: object) -> None:
        """Run a lifecycle hook in an app context; log its exceptions, never raise."""
        try:
            if has_app_context() and current_app._get_current_object() is self.state.app:  # type: ignore[attr-defined]
                hook(*args)
            else:
                with self.state.app.app_context():
                    hook(*args)
        except Exception:
            logger.exception("hook %s raised", getattr(hook, "__qualname__", hook))

    # -- rendering ------------------------------------------------------------

    def head(self) -> Markup:
        """The tags for ``<head>``: config, stylesheet, import map, runtime."""
        return render.head(self)

    def markup(self, element: LiveElement) -> Markup:
        """The HTML of ``element`` (a widget of this page); see :meth:`LiveElement.__html__`."""
        return render.markup(self, element)

    def encode(self, value: object, parent: LiveElement | None = None) -> str:
        """JSON for the browser; ``LiveElement`` values become widget values.

        An element not yet on the page is added (under ``parent`` when given).
        """
        return render.encode(self, value, parent)

    # -- server → browser ---------------------------------------------------

    def call_remote(self, name: str, *args: object) -> RemoteCall:
        """Call the page-level JS function registered as ``Athena.registerGlobal(name, fn)``."""
        return self.send_call(None, name, args, None)

    def send_call(
        self,
        widget: int | None,
        method: str,
        args: Iterable[object],
        element: LiveElement | None,
    ) -> RemoteCall:
        """Queue a call of ``method`` on widget ``widget`` (None: a global); return at once.

        Called by :meth:`LiveElement.call_remote` and :meth:`call_remote` in
        any greenlet; never blocks. On a closed page the call fails with
        :class:`ConnectionLost`; past ``ATHENA_MAX_PENDING_CALLS`` it is still
        delivered but fails with :class:`TooManyPending` at once.
        """
        if not isinstance(method, str) or not method:
            raise TypeError("method must be a non-empty string")
        call = self.pending.new(method)
        if self.closed:
            call.fail(ConnectionLost())
            return call
        args_json = self.encode(list(args), element)
        call_id: int | None = call.call_id
        if not self.pending.track(call):
            # Bounded: the browser is not answering; still deliver the call
            # but stop tracking its answer.
            call.fail(TooManyPending("too many unanswered calls to this page"))
            call_id = None
        self.outbox.publish(call_message(call_id, widget, method, args_json))
        metrics = self.state.metrics  # directly; the signal only when somebody listens
        if metrics is not None:
            metrics.remote_call_sent(self, call)
        if signals.remote_call_sent.receivers:
            signals.remote_call_sent.send(self.state.app, page=self, call=call)
        return call

    def expire_calls(self, now: float) -> None:
        """Fail server → browser calls past their deadline (run by the reaper)."""
        self.pending.expire(now)

    def _cancelled(self, call_id: int) -> None:
        # A tracked call was cancelled: tell the browser.
        if not self.closed:
            self.outbox.publish(cancel_message(call_id))

    # -- browser → server ---------------------------------------------------

    def receive(self, batch: Batch) -> tuple[int, str]:
        """Apply one POST; return ``(status, JSON body)``.

        Results of server → browser calls and the ack are applied at once,
        never queued behind a running call, so an exposed method waiting on
        ``call_remote(...).get()`` cannot deadlock. Sequenced messages run one
        at a time in ``seq`` order (plan, run, record: :mod:`.sequencer`);
        one already run is answered from the record instead. Blocks the
        POST's greenlet while calls run, and a retried POST while the first
        one still runs them (up to twice ``ATHENA_CALL_TIMEOUT``).
        """
        for result in batch.results:
            self.pending.resolve(result)
        if batch.ack is not None:
            self.outbox.ack(batch.ack)
        self.idle_since = monotonic()
        if not batch.sequenced:
            return 200, '{"results":[]}'
        if self.closed:
            raise PageGone()
        steps = self.sequencer.plan(batch.sequenced)
        todo = [step.message for step in steps if step.run]
        if todo:
            # No yield between planning and acquiring: concurrent POSTs for
            # one page queue on the semaphore in seq order.
            if self._call_lock is None:
                self._call_lock = Semaphore()
            with self._call_lock:
                for message in todo:
                    self._record(message.seq, run_message(self, message))
        deadline = monotonic() + self.state.config.call_timeout * 2
        return batch_reply([self._answer(step.message.seq, deadline) for step in steps])

    def _record(self, seq: int, answer: Answer) -> None:
        self.sequencer.record(seq, answer)
        recorded, self._recorded = self._recorded, None
        if recorded is not None:
            recorded.set()  # wake retried POSTs waiting for an answer

    def _answer(self, seq: int, deadline: float) -> Answer:
        """The recorded answer of ``seq``, waiting while another POST runs it."""
        while True:
            answer = self.sequencer.answer(seq)
            if answer is not None:
                return answer
            if self._recorded is None:
                self._recorded = Event()
            if not self._recorded.wait(max(0.0, deadline - monotonic())):
                raise CallTimeout("the call is still running; retry later")

    # -- the event stream -----------------------------------------------------

    def attach_stream(self) -> int:
        """An event stream attached; return its generation (see :attr:`stream_generation`).

        Runs ``connected()`` hooks the first time, in the caller's greenlet
        and context (the stream's request), and sends ``page-connected``.
        """
        if self.stream is not None and self.stream.writing_since is not None:
            # The old stream is stuck in a write: it would notice the newer
            # one only once that write returns.
            self.stream.cut("replaced by a newer stream")
        self.stream_generation += 1
        self.outbox.wake()  # the previous stream, if any, notices and ends
        self.stream_attached = True
        first = not self.was_connected
        if first:
            self.was_connected = True
            for element in list(self.elements.values()):
                self.run_hook(element.connected)
        signals.page_connected.send(self.state.app, page=self, first=first)
        return self.stream_generation

    def serve_stream(self, stream: StreamBody) -> None:
        """This worker serves the page's stream with ``stream`` (after :meth:`attach_stream`)."""
        self.stream = stream
        self.outbox.served_by(None)

    def stream_ended(self, stream: StreamBody, generation: int) -> None:
        """The stream of ``generation`` that this worker served ended."""
        if self.stream is stream:
            self.stream = None
        self.detach_stream(generation)

    def check_stream(self) -> None:
        """Cut this page's stream if it cannot keep up (see :mod:`flask_athena.stream`).

        The outbox calls this on publish once its backlog passes half its size.
        """
        if self.stream is not None:
            self.stream.check(monotonic())

    def detach_stream(self, generation: int) -> None:
        """The stream of ``generation`` ended; sends ``page-disconnected`` if it was current."""
        if generation == self.stream_generation and self.stream_attached:
            self.stream_attached = False
            self.idle_since = monotonic()
            signals.page_disconnected.send(self.state.app, page=self)

    # -- closing ----------------------------------------------------------------

    def close(self, reason: str) -> None:
        """Close the page: fail pending calls, run hooks, free everything.

        Runs in the caller's greenlet (beacon POST, reaper, shutdown);
        ``disconnected(reason)`` then ``detached()`` hooks run for every
        element. Closing twice does nothing.
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.pending.fail_all(ConnectionLost)
        self.outbox.close()
        for element in list(self.elements.values()):
            self.run_hook(element.disconnected, reason)
        for element in [e for e in self.elements.values() if e.parent is None]:
            self.detach_element(element, notify_browser=False)
        for element in list(self.elements.values()):  # orphans whose parent left
            self.detach_element(element, notify_browser=False)
        self.sequencer.clear()
        self.state.forget(self)
        signals.page_closed.send(self.state.app, page=self, reason=reason)
