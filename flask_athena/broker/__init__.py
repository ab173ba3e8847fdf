"""The broker: the one seam between one worker and many.

A broker owns two things that must be shared when there is more than one
worker: each page's *outbox* (the numbered server → browser messages kept for
replay) and *topics* (who receives a broadcast). :mod:`.memory` keeps both in
the process and is the default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from flask import Response


class Outbox(Protocol):
    """One page's numbered messages, kept until acknowledged (bounded)."""

    @property
    def last_seq(self) -> int:
        """Sequence number of the last message published (0 before the first)."""

    #: Called on publish while more than half the outbox is unacknowledged
    #: (the page checks whether its stream keeps up; see flask_athena.stream).
    on_backlog: Callable[[], None] | None

    def publish(self, data: str, field: bytes | None = None) -> int:
        """Append one message (a single-line JSON string); return its seq.

        ``field``: ``protocol.sse_data(data)`` when the caller built it
        already, for a ``data`` that is valid text (``protocol.valid_text``):
        a broadcast builds both once per widget id, not once per element.
        """

    def ack(self, seq: int) -> None:
        """The browser has every message up to ``seq``; forget them."""

    def read(self, after: int) -> list[bytes] | None:
        """SSE frames of the messages after ``after``.

        ``None`` when they cannot all be given (trimmed past ``after``, or
        ``after`` is ahead of what was ever published): replay is impossible.
        """

    def wait(self, after: int, timeout: float) -> bool:
        """Block the calling greenlet until a message after ``after`` exists,
        the outbox closes, or ``timeout`` passes; ``True`` unless timed out."""

    def wake(self) -> None:
        """Wake every waiter now (a newer stream replaced an older one)."""

    def close(self) -> None:
        """Wake every waiter; later reads return ``None``."""

    def served_by(self, worker: str | None) -> None:
        """Which worker serves the page's event stream: ``None`` for this one.

        Only the Redis broker, where another worker may serve it, needs to
        know (to wake that worker); the in-process broker ignores it.
        """


class RemotePages(Protocol):
    """Serves the endpoints of pages another worker owns (a broker that spans
    workers provides one: ``AthenaState.remote``; the in-process broker none).

    The views call these for a page id this worker does not hold; each
    blocks the request's greenlet as the local view would.
    """

    def calls(self, page_id: str) -> Response:
        """Answer a calls POST (checked here as far as possible, then by the owner)."""

    def close(self, page_id: str) -> Response:
        """Answer a close POST (``204`` when the page is gone already)."""

    def events(self, page_id: str, last: int, retry_ms: int) -> Response:
        """The page's event stream after ``last``, or a ``gone`` answer."""


class Broker(Protocol):
    """Creates outboxes, records pages and routes broadcasts."""

    def create_outbox(self, page_id: str, size: int) -> Outbox: ...

    def register_page(self, page_id: str, outbox: Outbox) -> None:
        """Record that this worker owns page ``page_id`` (blocks for the broker's
        round trip, if any), before the page's URLs are handed out: other
        workers must find the owner before the browser asks them."""

    def subscribe(self, topic: str, element: Any) -> None: ...

    def unsubscribe(self, topic: str, element: Any) -> None: ...

    def members(self, topic: str) -> list[Any]:
        """This worker's elements joined to ``topic`` (a copy)."""

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Call ``method`` on every element joined to ``topic``; return how many."""

    def close(self) -> None: ...
