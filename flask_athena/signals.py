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
