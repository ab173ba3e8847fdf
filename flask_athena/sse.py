"""Reading ``text/event-stream``: the one parser of tests, ``testing`` and the bench.

:mod:`flask_athena.protocol` writes the stream; this module reads it back the
way ``EventSource`` does (the WHATWG rules: ``event``, ``data``, ``id``,
``retry`` fields, comments, an event dispatched only at its blank line,
``\\n``, ``\\r\\n`` or ``\\r`` line ends). No library was added for it: the
maintained ones (``httpx-sse``, ``sseclient-py``) read from an HTTP client's
iterator, while the tests and the bench feed bytes from sockets they drive
themselves. Pure code, no I/O; never blocks.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from .protocol import JSONValue


class SSEEvent(NamedTuple):
    """One dispatched event."""

    #: The ``event:`` field, ``"message"`` when absent.
    event: str
    #: The ``data:`` lines joined with ``\\n``.
    data: str
    #: The ``id:`` field of *this* event, ``None`` when it had none.
    id: str | None = None

    def json(self) -> JSONValue:
        """:attr:`data` parsed as JSON."""
        value: JSONValue = json.loads(self.data)
        return value


class SSEParser:
    """Incremental ``text/event-stream`` parser: bytes in, complete events out.

    A stream cut mid-event loses the partial event instead of delivering
    half of it, as ``EventSource`` does.
    """

    __slots__ = ("_partial", "_held_cr", "_event", "_data", "_id", "retry", "last_id")

    def __init__(self) -> None:
        # Pieces of the line not ended yet: joined once its end arrives, so a
        # long line fed in small chunks costs linear time, not quadratic.
        self._partial: list[bytes] = []
        self._held_cr = False  # the last chunk ended in "\r": maybe half a CRLF
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        #: The last ``retry:`` value seen, in milliseconds.
        self.retry: int | None = None
        #: The last ``id:`` seen (what ``Last-Event-ID`` would send).
        self.last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed, in order."""
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._held_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = chunk.rfind(b"\n")
        if end < 0:
            if chunk:
                self._partial.append(chunk)
            return []
        lines = chunk[:end]
        if self._partial:
            lines = b"".join(self._partial) + lines
        self._partial = [chunk[end + 1 :]] if end + 1 < len(chunk) else []
        events: list[SSEEvent] = []
        for line in lines.decode("utf-8").split("\n"):
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data and self._id is None and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return event
        if line[0] == ":":
            return None  # a comment
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = self.last_id = value
        elif name == "event":
            self._event = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None


def message_of_frame(frame: bytes) -> tuple[int, str]:
    """``(seq, data)`` of a frame :func:`flask_athena.protocol.sse_message` built.

    Its exact inverse, for the outboxes that keep only frames: a Redis
    owner's local copy is mirrored to Redis from its frames (see
    :meth:`~flask_athena.broker.redis_outbox.RedisOutbox.served_by`).
    Raises ``ValueError`` for anything else: another shape, a seq that is
    not a decimal number, data over several lines (``sse_message`` takes
    one line; a JSON message never has a raw line break) or bytes that are
    not UTF-8.
    """
    head, sep, rest = frame.partition(b"\ndata: ")
    seq = head[4:]
    if (
        not sep
        or not head.startswith(b"id: ")
        or not seq.isdigit()
        or not seq.isascii()
        or not rest.endswith(b"\n\n")
    ):
        raise ValueError("not one SSE message frame")
    data = rest[:-2]
    if b"\n" in data or b"\r" in data:
        raise ValueError("an SSE message frame with data over several lines")
    return int(seq), data.decode()


def parse_events(stream: bytes) -> list[SSEEvent]:
    """Every complete event of a whole ``stream`` (a convenience for tests)."""
    return SSEParser().feed(stream)
