"""``LivePage``: one browser page's widgets, calls in both directions and ordering.

A page is created by :meth:`Athena.page` while a view renders, lives in the
worker that rendered it, and is freed when the browser leaves (beacon), after
``ATHENA_PAGE_TIMEOUT`` seconds without an event stream, or on shutdown.

Threading model: everything runs in gevent greenlets of one OS thread, so no
locks guard plain state; the one semaphore below serialises *browser calls*,
which may block (an exposed method may wait for the browser).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

from flask import current_app, has_app_context
from gevent.event import AsyncResult
from gevent.lock import Semaphore
from markupsafe import Markup, escape

from . import registry, signals
from .element import _RESERVED, LiveElement
from .errors import (
    AthenaError,
    BadMessage,
    CallCancelled,
    CallTimeout,
    ClientError,
    ConnectionLost,
    PageGone,
    RemoteError,
    SequenceGap,
    TooManyPending,
    WidgetNotFound,
)
from .protocol import (
    WIDGET_KEY,
    Batch,
    CallMessage,
    ResultMessage,
    SequencedMessage,
    call_message,
    cancel_message,
    detach_message,
    dumps,
)

if TYPE_CHECKING:
    from .state import AthenaState
    from .stream import StreamBody

logger = logging.getLogger("flask_athena")


class RemoteCall:
    """The pending result of a server → browser call.

    Returned at once by :meth:`LiveElement.call_remote` and
    :meth:`LivePage.call_remote`; nothing waits unless :meth:`get` is called.
    """

    __slots__ = ("call_id", "method", "_result", "_timeout", "_page")

    def __init__(self, call_id: int, method: str, timeout: float, page: LivePage) -> None:
        self.call_id = call_id
        self.method = method
        self._result: AsyncResult = AsyncResult()
        self._timeout = timeout
        self._page = page

    def get(self, timeout: float | None = None) -> Any:
        """Block this greenlet until the browser answers; return its value.

        ``timeout`` defaults to ``ATHENA_CALL_TIMEOUT``; a longer one also
        keeps the reaper from expiring the call before it. Raises
        :class:`RemoteError` (the JS method threw), :class:`CallTimeout`,
        :class:`CallCancelled` or :class:`ConnectionLost` (the page closed
        first).
        """
        if timeout is not None:
            self._page._extend_deadline(self.call_id, monotonic() + timeout)
        # wait() never raises, so an outer gevent.Timeout of the caller is
        # not mistaken for ours.
        self._result.wait(self._timeout if timeout is None else timeout)
        if not self._result.ready():
            raise CallTimeout(f"no answer to {self.method!r} in time")
        return self._result.get(block=False)

    def ready(self) -> bool:
        return bool(self._result.ready())

    def cancel(self) -> bool:
        """Stop waiting for the browser's answer; ``False`` if the call had
        already ended (answered, failed, timed out or cancelled).

        A :meth:`get` waiting now, or called later, raises
        :class:`CallCancelled`; the answer, should it still come, is ignored.
        The browser is told (a ``cancel`` message): the JS method sees it
        through the signal of ``Athena.callSignal()`` and its result is not
        sent. A call the browser has not received yet is still delivered
        (messages are never taken back) and cancelled right after.
        """
        if self._result.ready():
            return False
        self._fail(CallCancelled(f"call to {self.method!r} cancelled"))
        self._page._cancel_call(self.call_id)
        return True

    @property
    def error(self) -> BaseException | None:
        """Why the call failed (``None`` while pending or after an answer)."""
        return self._result.exception  # type: ignore[no-any-return]

    def link(self, callback: Callable[[RemoteCall], None]) -> None:
        """Run ``callback(call)`` in the hub once the call ends, however it ends."""
        self._result.rawlink(lambda _result: callback(self))

    def _fail(self, error: AthenaError) -> None:
        if not self._result.ready():
            self._result.set_exception(error)


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
        self.session_key = session_key
        self.outbox = state.broker.create_outbox(self.id, state.config.outbox_size)
        self.outbox.on_backlog = self.check_stream
        #: widget id -> element, for every element on the page.
        self.elements: dict[int, LiveElement] = {}
        self._next_widget = 0
        self._next_call = 0
        self._pending: dict[int, tuple[RemoteCall, float]] = {}
        # Browser → server ordering: the next seq to run, and the answers of
        # the latest batch, kept so a retried POST is answered, not re-run.
        self._expected_seq = 1
        self._records: dict[int, AsyncResult] = {}
        self._call_lock: Semaphore | None = None
        #: Bumped by each stream that attaches; an older stream sees the
        #: change and ends, so one page has at most one live stream.
        self.stream_generation = 0
        self.stream_attached = False
        #: The event stream this worker serves for the page (None when none
        #: is open, or another worker serves it).
        self.stream: StreamBody | None = None
        self.was_connected = False
        self.idle_since = monotonic()
        self.closed = False
        self.close_reason: str | None = None

    @property
    def pending_calls(self) -> int:
        """How many server → browser calls wait for the browser's answer."""
        return len(self._pending)

    def __repr__(self) -> str:  # no id: page ids are never logged
        return f"<LivePage widgets={len(self.elements)} closed={self.closed}>"

    # -- building -----------------------------------------------------------

    def add(self, element: LiveElement) -> LiveElement:
        """Put ``element`` (and its children) on this page; return it."""
        if element.parent is not None and element.parent.page is not self:
            raise ValueError("add the parent to the page instead")
        self._adopt(element)
        return element

    def _adopt(self, element: LiveElement) -> None:
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
            self._adopt(child)
        if self.was_connected:
            self._run_hook(element.connected)

    def head(self) -> Markup:
        """The tags for ``<head>``: config, stylesheet, import map, runtime."""
        base = self.state.base_url()
        runtime = f"{base}/static/athena.js"
        config = {
            "page": self.id,
            "token": self.token,
            "events": f"{base}/{self.id}/events",
            "calls": f"{base}/{self.id}/calls",
            "close": f"{base}/{self.id}/close",
            "heartbeatMs": int(self.state.config.heartbeat * 1000),
            "callTimeoutMs": int(self.state.config.call_timeout * 1000),
            # Ack often enough that the outbox never trims what a browser
            # that reconnects would still need.
            "ackEvery": max(1, min(256, self.state.config.outbox_size // 4)),
            "debug": bool(self.state.app.debug),
        }
        imports = {"athena": runtime}
        modules = set(self.state.athena.modules) | set(self.state.athena.module_paths)
        modules.update(el.js_class.rpartition(".")[0] for el in self.elements.values())
        for module in sorted(modules):
            imports[module] = self.state.module_url(module)
        # "</" would end the <script> element early.
        import_map = dumps({"imports": imports}).replace("</", "<\\/")
        return Markup(
            f'<meta name="athena-config" content="{escape(dumps(config))}">\n'
            f'<link rel="stylesheet" href="{escape(base)}/static/athena.css">\n'
            f'<script type="importmap">{import_map}</script>\n'
            f'<script type="module" src="{escape(runtime)}"></script>'
        )

    def _markup(self, element: LiveElement) -> Markup:
        module = element.js_class.rpartition(".")[0]
        args = dumps(list(element.initial_arguments()))
        inner = str(element.render())
        # Children the template did not place go at the end, so the browser
        # always gets every child the server knows about.
        for child in element.children:
            if f'data-athena-widget="{child.id}"' not in inner:
                inner += str(child.__html__())
        tag = element.tag
        return Markup(
            f'<{tag} data-athena-widget="{element.id}" '
            f'data-athena-class="{escape(element.js_class)}" '
            f'data-athena-module="{escape(self.state.module_url(module))}" '
            f'data-athena-args="{escape(args)}">{inner}</{tag}>'
        )

    def encode(self, value: Any, parent: LiveElement | None = None) -> str:
        """JSON for the browser; ``LiveElement`` values become widget values.

        An element not yet on the page is added (under ``parent`` when given).
        Rendering needs an app context; one is pushed when missing (calls
        made from background greenlets).
        """

        def widget_value(obj: Any) -> Any:
            if not isinstance(obj, LiveElement):
                raise TypeError(f"{type(obj).__name__} is not JSON serializable")
            if obj.page is None:
                if parent is not None:
                    parent.add(obj)
                else:
                    self.add(obj)
            elif obj.page is not self:
                raise TypeError(f"{obj!r} belongs to another page")
            return {
                WIDGET_KEY: "widget",
                "id": obj.id,
                "parent": obj.parent.id if obj.parent is not None else None,
                "html": str(obj.__html__()),
            }

        if has_app_context():
            return dumps(value, default=widget_value)
        with self.state.app.app_context():
            return dumps(value, default=widget_value)

    # -- server → browser ---------------------------------------------------

    def call_remote(self, name: str, *args: Any) -> RemoteCall:
        """Call the page-level JS function registered as ``Athena.registerGlobal(name, fn)``."""
        return self._send_call(None, name, args, None)

    def _send_call(
        self, widget: int | None, method: str, args: Iterable[Any], element: LiveElement | None
    ) -> RemoteCall:
        if not isinstance(method, str) or not method:
            raise TypeError("method must be a non-empty string")
        timeout = self.state.config.call_timeout
        self._next_call += 1
        call = RemoteCall(self._next_call, method, timeout, self)
        if self.closed:
            call._fail(ConnectionLost())
            return call
        args_json = self.encode(list(args), element)
        call_id: int | None = call.call_id
        if len(self._pending) >= self.state.config.max_pending_calls:
            # Bounded: the browser is not answering; still deliver the call
            # but stop tracking its answer.
            call._fail(TooManyPending("too many unanswered calls to this page"))
            call_id = None
        else:
            self._pending[call.call_id] = (call, monotonic() + timeout)
        self.outbox.publish(call_message(call_id, widget, method, args_json))
        signals.remote_call_sent.send(self.state.app, page=self, call=call)
        return call

    def _resolve(self, result: ResultMessage) -> None:
        entry = self._pending.pop(result.call, None)
        if entry is None:  # duplicate, late or unknown: answers are idempotent
            return
        call = entry[0]
        if result.error is not None:
            call._fail(RemoteError(result.error["message"], js_name=result.error["name"]))
        elif not call._result.ready():
            call._result.set(result.ok)

    def expire_calls(self, now: float) -> None:
        """Fail server → browser calls past their deadline (run by the reaper)."""
        expired = [cid for cid, (_, deadline) in self._pending.items() if deadline <= now]
        for cid in expired:
            # The browser is not told: most calls are fire-and-forget, and a
            # page offline past the timeout would get a cancel for each.
            call, _ = self._pending.pop(cid)
            call._fail(CallTimeout(f"no answer to {call.method!r} in time"))

    def _extend_deadline(self, call_id: int, deadline: float) -> None:
        entry = self._pending.get(call_id)
        if entry is not None and entry[1] < deadline:
            self._pending[call_id] = (entry[0], deadline)

    def _cancel_call(self, call_id: int) -> None:
        """Stop tracking a cancelled call; tell the browser."""
        if self._pending.pop(call_id, None) is not None and not self.closed:
            self.outbox.publish(cancel_message(call_id))

    # -- browser → server ---------------------------------------------------

    def receive(self, batch: Batch) -> tuple[int, str]:
        """Apply one POST; return ``(status, JSON body)``.

        Results of server → browser calls and the ack are applied at once,
        never queued behind a running call, so an exposed method waiting on
        ``call_remote(...).get()`` cannot deadlock. Sequenced messages run one
        at a time in ``seq`` order; one already run is answered from the
        record instead.
        """
        for result in batch.results:
            self._resolve(result)
        if batch.ack is not None:
            self.outbox.ack(batch.ack)
        self.idle_since = monotonic()
        if not batch.sequenced:
            return 200, '{"results":[]}'
        if self.closed:
            raise PageGone()
        first = batch.sequenced[0].seq
        if first > self._expected_seq:
            raise SequenceGap(expected=self._expected_seq)
        # The browser sends one sequenced batch at a time, so a batch starting
        # at `first` means it has the answers of everything before it.
        for seq in [s for s, rec in self._records.items() if s < first and rec.ready()]:
            del self._records[seq]
        answers: list[AsyncResult] = []
        todo: list[tuple[SequencedMessage, AsyncResult]] = []
        for message in batch.sequenced:
            record = self._records.get(message.seq)
            if record is None:
                record = AsyncResult()
                if message.seq < self._expected_seq:
                    # Already run and forgotten: the browser broke the protocol.
                    record.set((400, _error_reply(message.seq, BadMessage("seq already answered"))))
                else:
                    self._records[message.seq] = record
                    self._expected_seq = message.seq + 1
                    todo.append((message, record))
            answers.append(record)
        if todo:
            # No yield between recording and acquiring: concurrent POSTs for
            # one page queue on the semaphore in seq order.
            if self._call_lock is None:
                self._call_lock = Semaphore()
            with self._call_lock:
                for message, record in todo:
                    record.set(self._run(message))
        status = 200
        replies = []
        for record in answers:
            # A retried POST may wait for a call the first POST is still running.
            if not record.wait(self.state.config.call_timeout * 2):
                raise CallTimeout("the call is still running; retry later")
            code, reply = record.get(block=False)
            if status == 200 and code != 200:
                status = code
            replies.append(reply)
        return status, '{"results":[' + ",".join(replies) + "]}"

    def _run(self, message: SequencedMessage) -> tuple[int, str]:
        element = self.elements.get(message.widget)
        method_name = message.method if isinstance(message, CallMessage) else "detach"
        try:
            if self.closed:
                raise PageGone()
            if element is None:
                raise WidgetNotFound()
            if not isinstance(message, CallMessage):
                self._detach(element, notify_browser=False)
                return 200, f'{{"seq":{message.seq},"ok":null}}'
            method = registry.resolve(element, message.method, _RESERVED)
            registry.bind(method, message.args, message.kwargs)
            app = self.state.app
            signals.call_received.send(app, page=self, element=element, method=method_name)
            value = method(*message.args, **message.kwargs)
            reply = f'{{"seq":{message.seq},"ok":{self.encode(value, element)}}}'
            signals.call_completed.send(app, page=self, element=element, method=method_name)
            return 200, reply
        except ClientError as exc:
            self._call_failed(element, method_name, exc)
            return exc.status_code, _error_reply(message.seq, exc)
        except Exception as exc:  # user code: log, answer generically
            logger.exception("exposed method %r raised", method_name)
            self._call_failed(element, method_name, exc)
            detail = f"{type(exc).__name__}: {exc}" if self.state.app.debug else None
            return 200, _error_reply(message.seq, RemoteError(detail))

    def _call_failed(self, element: LiveElement | None, method: str, error: Exception) -> None:
        signals.call_failed.send(
            self.state.app, page=self, element=element, method=method, error=error
        )

    # -- detaching and closing ---------------------------------------------

    def _detach(self, element: LiveElement, notify_browser: bool) -> None:
        if notify_browser and not self.closed and element.id is not None:
            self.outbox.publish(detach_message(element.id))
        for child in list(element.children):
            self._detach(child, notify_browser=False)
        for topic in list(element._topics or ()):
            element.leave(topic)
        if element.id is not None:
            self.elements.pop(element.id, None)
        self._run_hook(element.detached)
        if element.parent is not None and element in element.parent.children:
            element.parent.children.remove(element)
            element.parent = None
        element.page = None

    def _run_hook(self, hook: Any, *args: Any) -> None:
        """Run a lifecycle hook; its exceptions are logged, never propagated."""
        try:
            if has_app_context() and current_app._get_current_object() is self.state.app:  # type: ignore[attr-defined]
                hook(*args)
            else:
                with self.state.app.app_context():
                    hook(*args)
        except Exception:
            logger.exception("hook %s raised", getattr(hook, "__qualname__", hook))

    def attach_stream(self) -> int:
        """An event stream attached; return its generation (see :attr:`stream_generation`)."""
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
                self._run_hook(element.connected)
        signals.page_connected.send(self.state.app, page=self, first=first)
        return self.stream_generation

    def check_stream(self) -> None:
        """Cut this page's stream if it cannot keep up (see :mod:`flask_athena.stream`).

        The outbox calls this on publish once its backlog passes half its size.
        """
        if self.stream is not None:
            self.stream.check(monotonic())

    def detach_stream(self, generation: int) -> None:
        if generation == self.stream_generation and self.stream_attached:
            self.stream_attached = False
            self.idle_since = monotonic()
            signals.page_disconnected.send(self.state.app, page=self)

    def close(self, reason: str) -> None:
        """Close the page: fail pending calls, run hooks, free everything."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        pending, self._pending = self._pending, {}
        for call, _ in pending.values():
            call._fail(ConnectionLost())
        self.outbox.close()
        for element in list(self.elements.values()):
            self._run_hook(element.disconnected, reason)
        for element in [e for e in self.elements.values() if e.parent is None]:
            self._detach(element, notify_browser=False)
        for element in list(self.elements.values()):  # orphans whose parent left
            self._detach(element, notify_browser=False)
        self._records.clear()
        self.state.forget(self)
        signals.page_closed.send(self.state.app, page=self, reason=reason)


def _error_reply(seq: int, error: AthenaError) -> str:
    body = error.to_json()
    body.setdefault("name", type(error).__name__)
    return dumps({"seq": seq, "error": body})
