"""What every event-stream body shares: iteration, write tracking and the cut.

A stream body is the WSGI response iterable of one event stream, iterated by
the server in the connection's greenlet: each chunk it returns is written to
the socket before the server asks for the next. So between returning a chunk
and the next ``__next__`` the greenlet is inside the server's write, and that
write blocks while the browser is not reading.

**Slow consumers** (DESIGN §3, docs/protocol.rst "Slow consumers"). A stream
is *cut* — its connection reset by throwing :class:`StreamCut` into the
blocked write — when it cannot keep up:

* more than half of ``ATHENA_OUTBOX_SIZE`` messages were published after the
  ones it is still writing (checked on publish and by the reaper), or
* one write has been blocked for longer than twice ``ATHENA_HEARTBEAT``
  (checked by the reaper; a peer that stops reading never fails a write on
  its own);
* a newer stream of the same page attached while it was blocked.

The browser's ``EventSource`` reconnects with ``Last-Event-ID`` and the rest
is replayed from the outbox, so nothing is lost; the kernel buffers and the
greenlet of the stuck connection are freed meanwhile. Past the outbox bound
the page is ``gone``, as before: memory stays bounded either way.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Generator, Iterable, Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask, Response, current_app

from . import signals
from .errors import TooManyStreams
from .protocol import gone_event, sse_retry

if TYPE_CHECKING:
    from .page import LivePage
    from .state import AthenaState

logger = logging.getLogger("flask_athena")


def admit_stream(state: AthenaState, session_key: str) -> None:
    """Before an event stream opens (in its request): raise
    :class:`~flask_athena.errors.TooManyStreams` (429) when the session, the
    client address or the worker holds as many streams as allowed."""
    if state.session_streams.get(session_key, 0) >= state.config.max_streams_per_session:
        raise TooManyStreams()
    state.limits.admit_stream(state.limits.current_client(), len(state.streams))


def event_stream_response(body: Iterable[bytes]) -> Response:
    """A ``text/event-stream`` response no proxy buffers or transforms."""
    response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    response.headers["Cache-Control"] = "no-cache, no-transform"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: do not buffer
    return response


def gone_response(reason: str, retry_ms: int) -> Response:
    """A stream that only says replay is impossible (see docs/protocol.rst).

    Not an error status: ``EventSource`` hides those, and the browser must
    learn that it has to reload.
    """
    return event_stream_response([sse_retry(retry_ms) + gone(current_app, reason)])


def gone(app: Flask, reason: str) -> bytes:
    """The ``gone`` event for ``reason``; sends :data:`~flask_athena.signals.page_gone`."""
    signals.page_gone.send(getattr(app, "_get_current_object", lambda: app)(), reason=reason)
    return gone_event(reason)


#: Bytes handed to one write at most (unless one frame is larger): a replay
#: or a burst is written in chunks, so the slow-consumer time bound applies
#: to each chunk and a browser that reads steadily is never cut while a big
#: replay goes out (a 25 MB replay in one write would be "blocked" for as
#: long as the whole transfer takes).
CHUNK_BYTES = 256 * 1024


def chunks(frames: list[bytes], head: bytes = b"") -> Iterator[bytes]:
    """``head`` and ``frames`` joined into writes of about :data:`CHUNK_BYTES`.

    Frames are never split; a burst of small frames stays one write.
    """
    chunk: list[bytes] = [head] if head else []
    size = len(head)
    for frame in frames:
        if size and size + len(frame) > CHUNK_BYTES:
            yield b"".join(chunk)
            chunk, size = [], 0
        chunk.append(frame)
        size += len(frame)
    if chunk:
        yield b"".join(chunk)


class StreamCut(ConnectionResetError):
    """Thrown into a stream's blocked write to reset its connection.

    A ``ConnectionResetError`` (``ECONNRESET``), so gunicorn and
    ``gevent.pywsgi`` treat it as the client going away: the connection is
    closed quietly and the body's ``close()`` runs.
    """

    def __init__(self, why: str) -> None:
        super().__init__(errno.ECONNRESET, f"flask_athena: event stream cut ({why})")


class StreamBody:
    """Base class of :class:`~flask_athena.transport.EventStream` and
    :class:`~flask_athena.forwarding.RemoteEventStream`.

    Subclasses set :attr:`_body` (the generator of chunks), keep :attr:`sent`
    up to date (the seq of the last message handed to the server to write)
    and free what they hold in :meth:`_release`.
    """

    __slots__ = (
        "_state",
        "_session_key",
        "_client",
        "_body",
        "_greenlet",
        "_closed",
        "sent",
        "writing_since",
    )

    def __init__(self, state: AthenaState, session_key: str) -> None:
        self._state = state
        self._session_key = session_key
        # Counted per client address from here to close() (the view checked
        # the limit with admit_stream() before building the stream).
        self._client = state.limits.current_client()
        state.limits.stream_opened(self._client)
        self._body: Generator[bytes, None, None] | None = None
        self._greenlet: Any = None  # the connection's greenlet, once iterated
        self._closed = False
        #: Seq of the last message handed to the server's write.
        self.sent = 0
        #: When the chunk being written now was handed over (None: not writing).
        self.writing_since: float | None = None
        state.streams.add(self)
        state.ensure_reaper()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._body is None:
            raise StopIteration
        if self._greenlet is None:
            self._greenlet = gevent.getcurrent()
            signals.stream_opened.send(self._state.app, page=self.local_page())
        self.writing_since = None  # the server finished writing the last chunk
        chunk = next(self._body)
        self.writing_since = monotonic()
        return chunk

    def local_page(self) -> LivePage | None:
        """The page, when this worker owns it."""
        return None

    def count_sent(self, count: int, replayed: bool = False) -> None:
        """Subclasses: ``count`` messages go to the write now (for metrics).

        Counted into the app's metrics directly; ``messages-sent`` is sent
        only when a receiver is connected (see :attr:`AthenaState.metrics
        <flask_athena.state.AthenaState.metrics>`).
        """
        if not count:
            return
        metrics, signal = self._state.metrics, signals.messages_sent
        if metrics is not None or signal.receivers:
            page = self.local_page()
            if metrics is not None:
                metrics.messages_sent(page, count, replayed)
            if signal.receivers:
                signal.send(self._state.app, page=page, count=count, replayed=replayed)

    def newest(self) -> int | None:
        """Seq of the page's newest message, when this worker knows it."""
        page = self.local_page()
        return None if page is None else page.outbox.last_seq

    def stalled(self, now: float) -> str | None:
        """Why this stream cannot keep up, or ``None`` when it can.

        Only the time bound applies when :meth:`newest` is unknown here.
        """
        since = self.writing_since
        if since is None or self._closed:
            return None
        config = self._state.config
        if now - since > 2 * config.heartbeat:
            return "write blocked"
        newest = self.newest()
        if newest is not None and newest - self.sent > max(1, config.outbox_size // 2):
            return "too far behind"
        return None

    def check(self, now: float) -> bool:
        """Cut the stream if it cannot keep up; ``True`` if it was cut."""
        why = self.stalled(now)
        return why is not None and self.cut(why)

    def cut(self, why: str) -> bool:
        """Reset this stream's connection now; ``True`` if it was cut."""
        target = self._greenlet
        if self._closed or target is None or target.dead or target is gevent.getcurrent():
            return False
        logger.info("flask_athena: event stream cut: %s", why)
        self.writing_since = None  # cut once: later checks see nothing to cut
        gevent.kill(target, StreamCut(why))  # thrown in at its next switch
        signals.stream_cut.send(self._state.app, page=self.local_page(), reason=why)
        return True

    def close(self) -> None:
        """Called by the WSGI server whatever happened (even before the first chunk)."""
        if self._closed:
            return
        self._closed = True
        self.writing_since = None
        self._state.streams.discard(self)
        if self._greenlet is not None:  # opened (iterated) once: pairs with stream_opened
            signals.stream_closed.send(self._state.app, page=self.local_page())
        if self._body is not None:
            self._body.close()
        self._state.limits.stream_closed(self._client)
        counts, key = self._state.session_streams, self._session_key
        remaining = counts.get(key, 1) - 1
        if remaining > 0:
            counts[key] = remaining
        else:
            counts.pop(key, None)
        self._release()

    def _release(self) -> None:
        """Subclasses: free what the stream holds (after the body closed)."""
