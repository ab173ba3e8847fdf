"""Running one browser → server message: an exposed method call, or a detach.

The *run* step between :meth:`Sequencer.plan
<flask_athena.sequencer.Sequencer.plan>` and :meth:`Sequencer.record
<flask_athena.sequencer.Sequencer.record>`. It runs in the POST's greenlet
(in its request context when the view called it) and blocks while the
exposed method does.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from . import registry, signals
from .element import RESERVED_NAMES, LiveElement
from .errors import ClientError, PageGone, RemoteError, WidgetNotFound
from .protocol import CallMessage, SequencedMessage
from .sequencer import Answer, error_result

if TYPE_CHECKING:
    from .page import LivePage

logger = logging.getLogger("flask_athena")


def run_message(page: LivePage, message: SequencedMessage) -> Answer:
    """Run ``message`` on ``page``; return its answer, never raise.

    Client errors (unknown widget or method, arguments that do not bind)
    answer with their status; an exception of user code is logged and
    answered as a :class:`~flask_athena.errors.RemoteError` (with its text in
    debug mode only). Sends ``call-received``, ``call-completed`` and
    ``call-failed``.
    """
    element = page.elements.get(message.widget)
    method_name = message.method if isinstance(message, CallMessage) else "detach"
    app = page.state.app
    try:
        if page.closed:
            raise PageGone()
        if element is None:
            raise WidgetNotFound()
        if not isinstance(message, CallMessage):
            page.detach_element(element, notify_browser=False)
            return 200, f'{{"seq":{message.seq},"ok":null}}'
        method = registry.resolve(element, message.method, RESERVED_NAMES)
        registry.bind(method, message.args, message.kwargs)
        # Metrics directly, signals only when somebody listens (AthenaState.metrics).
        metrics = page.state.metrics
        if metrics is not None:
            metrics.call_started()
        if signals.call_received.receivers:
            signals.call_received.send(app, page=page, element=element, method=method_name)
        value = method(*message.args, **message.kwargs)
        reply = f'{{"seq":{message.seq},"ok":{page.encode(value, element)}}}'
        if metrics is not None:
            metrics.call_ended(page, element, method_name, "ok")
        if signals.call_completed.receivers:
            signals.call_completed.send(app, page=page, element=element, method=method_name)
        return 200, reply
    except ClientError as exc:
        _failed(page, element, method_name, exc)
        return exc.status_code, error_result(message.seq, exc)
    except Exception as exc:  # user code: log, answer generically
        logger.exception("exposed method %r raised", method_name)
        _failed(page, element, method_name, exc)
        detail = f"{type(exc).__name__}: {exc}" if app.debug else None
        return 200, error_result(message.seq, RemoteError(detail))


def _failed(page: LivePage, element: LiveElement | None, method: str, error: Exception) -> None:
    signals.call_failed.send(page.state.app, page=page, element=element, method=method, error=error)
