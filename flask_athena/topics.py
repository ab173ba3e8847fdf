"""Topics: which of this worker's elements joined which topic, and broadcasts.

``element.join(topic)`` records the element here; ``athena.broadcast(topic,
method, *args)`` hands the call, serialized once, to the broker, which
carries it to every worker (the in-process broker: straight back to this
one); each worker's :class:`Topics` then queues the call in the outbox of
every element of its own that joined the topic. So the brokers carry bytes
only, and what a topic *is* lives in this one module for both of them.

Greenlets are cooperative: nothing here yields between reading and writing
the table, so it needs no lock.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .protocol import call_message, sse_data, valid_text

if TYPE_CHECKING:
    from .broker import Broker
    from .element import LiveElement

logger = logging.getLogger("flask_athena")


class Topics:
    """The topics of one app in one worker, over its broker's broadcasts.

    Made by the app state; it sets itself as the broker's
    :attr:`~flask_athena.broker.Broker.on_broadcast`.
    """

    __slots__ = ("_broker", "_members")

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        # topic -> elements joined (a dict keeps join order, like an ordered set)
        self._members: dict[str, dict[LiveElement, None]] = {}
        broker.on_broadcast = self.deliver

    def join(self, topic: str, element: LiveElement) -> None:
        """Add ``element`` to ``topic`` (nothing if it is there). Never blocks."""
        self._members.setdefault(topic, {})[element] = None

    def leave(self, topic: str, element: LiveElement) -> None:
        """Remove ``element`` from ``topic`` (nothing if it is not there). Never blocks."""
        members = self._members.get(topic)
        if members is not None:
            members.pop(element, None)
            if not members:
                del self._members[topic]

    def members(self, topic: str) -> list[LiveElement]:
        """This worker's elements joined to ``topic``, in join order (a copy)."""
        return list(self._members.get(topic, ()))

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Have every worker call ``method`` on its elements joined to ``topic``.

        ``args_json`` is the JSON array of the arguments, serialized once for
        every receiver. Returns what the broker returns (elements reached
        in-process, workers reached when it spans workers); may block for the
        broker's round trip and raise
        :class:`~flask_athena.errors.BrokerUnavailable`.
        """
        return self._broker.broadcast(topic, method, args_json)

    def deliver(self, topic: str, method: str, args_json: str) -> int:
        """Queue ``method(*args)`` for every member here; return how many got it.

        Called by the broker, in the greenlet that carried the broadcast
        here (the broadcaster's in-process, the subscriber's with Redis);
        never blocks. One member's page failing (a bug, a broken outbox)
        must not cost the rest of the topic the message: that page is
        closed (its browser learns it is gone and reloads: an explicit
        failure, not a silent gap) and delivery goes on.
        """
        members = self._members.get(topic)
        if not members:
            return 0
        delivered = 0
        failed = 0
        # The message differs between elements only by widget id: built and
        # framed once per widget id (most topics have one), not per element.
        built: dict[int, tuple[str, bytes]] = {}
        for element in list(members):  # a receiving page may close (and leave) meanwhile
            page = element.page
            wid = element.id
            if page is None or wid is None:
                continue
            try:
                message = built.get(wid)
                if message is None:
                    text = valid_text(call_message(None, wid, method, args_json))
                    message = built[wid] = (text, sse_data(text))
                page.outbox.publish(*message)
            except Exception:
                failed += 1
                if failed == 1:
                    logger.exception("flask_athena: broadcast to one page failed; closing it")
                try:
                    page.close("error")
                except Exception:
                    logger.exception("flask_athena: closing a failed page raised")
            else:
                delivered += 1
        if failed > 1:
            logger.error("flask_athena: broadcast failed for %d pages; closed them", failed)
        return delivered

    def clear(self) -> None:
        """Forget every membership (the app shuts down)."""
        self._members.clear()
