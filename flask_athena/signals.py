"""blinker signals sent by flask_athena.

Every signal's sender is the Flask app; details come as keyword arguments, so
receivers should accept ``**extra``::

    from flask_athena import signals

    @signals.page_closed.connect_via(app)
    def on_closed(app, page, reason, **extra): ...
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A page was created for a request. Keyword arguments: ``page``.
page_opened = _signals.signal("page-opened")
#: A page's event stream attached. Keyword arguments: ``page``, ``first`` (bool).
page_connected = _signals.signal("page-connected")
#: A page's event stream ended. Keyword arguments: ``page``.
page_disconnected = _signals.signal("page-disconnected")
#: A page closed and was freed. Keyword arguments: ``page``, ``reason``.
page_closed = _signals.signal("page-closed")
#: An exposed method is about to run. Keyword arguments: ``page``, ``element``, ``method``.
call_received = _signals.signal("call-received")
#: A page's event stream could not keep up and was cut; the browser reconnects
#: and gets the rest by replay. Keyword arguments: ``page`` (``None`` for a
#: stream this worker serves for another worker's page), ``reason``.
stream_cut = _signals.signal("stream-cut")
#: An exposed call failed. Keyword arguments: ``page``, ``element``, ``method``, ``error``.
call_failed = _signals.signal("call-failed")
#: Presence in a topic changed, delivered on this worker (once per change per
#: worker, after the members' ``presence_changed`` hooks). Keyword arguments:
#: ``topic``, ``joins``, ``leaves`` (key -> metas, see flask_athena.presence).
presence_changed = _signals.signal("presence-changed")
#: An exposed call returned without raising. Keyword arguments: ``page``,
#: ``element``, ``method``.
call_completed = _signals.signal("call-completed")
#: A server → browser call was queued. Keyword arguments: ``page``, ``call`` (a
#: :class:`~flask_athena.page.RemoteCall`; :meth:`~flask_athena.page.RemoteCall.link` sees it end).
remote_call_sent = _signals.signal("remote-call-sent")
#: An event stream opened on this worker. Keyword arguments: ``page`` (``None``
#: for a stream this worker serves for another worker's page).
stream_opened = _signals.signal("stream-opened")
#: An event stream ended on this worker. Keyword arguments: ``page`` (or ``None``, as above).
stream_closed = _signals.signal("stream-closed")
#: Messages were handed to an event stream's write. Keyword arguments: ``page``
#: (or ``None``), ``count``, ``replayed`` (``True`` for the replay that opens a resumed stream).
messages_sent = _signals.signal("messages-sent")
#: A browser was told its page is gone (it reloads). Keyword arguments: ``reason``.
page_gone = _signals.signal("page-gone")
#: A calls or close POST was forwarded to the worker owning its page (Redis).
#: Keyword arguments: ``kind`` (``"calls"`` or ``"close"``), ``status`` (the owner's HTTP status).
post_forwarded = _signals.signal("post-forwarded")
#: The Redis broker failed (a caller got ``BrokerUnavailable``, or a background
#: loop retries). Keyword arguments: ``operation`` (a fixed name), ``error``.
broker_error = _signals.signal("broker-error")
#: A connection of the Redis broker (its heartbeat or its subscriber) works
#: again after failures. No keyword arguments.
broker_reconnected = _signals.signal("broker-reconnected")
