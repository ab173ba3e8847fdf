"""One event stream for the pages of several tabs: ``GET <prefix>/events``.

DESIGN §9. A browser gives an HTTP/1.1 origin six connections; with one event
stream per tab the seventh tab never loads. So the tabs of one browser share
one stream (``athena-shared.js`` elects the tab that holds it and relays each
page's messages to its tab), and this endpoint serves the pages of all of
them on one connection::

    GET <prefix>/events?pages=<page>:<last>,<page>:<last>,...

``last`` is, per page, the id of the last message that page's tab received
(its Last-Event-ID): each page replays from its own. Each page is attached
exactly as ``GET <prefix>/<page>/events`` attaches it (same checks, same
replay, same hooks, same slow-consumer cut; the page's stream is the newest
one, whichever kind), so the guarantees of DESIGN §3 hold per page.

What goes out:

* each page message as the page's own SSE message (``id:`` = the page's seq)
  with one more first ``data:`` line, the page id: ``event.data`` is
  ``<page>\\n<message JSON>``;
* ``event: gone`` with ``{"page", "reason"}`` when one page cannot go on (it
  closed, its outbox was trimmed); the others go on;
* one heartbeat for all pages every ``ATHENA_HEARTBEAT`` seconds.

Every page must belong to the request's session, checked before anything is
attached: one page of another session and the whole request is refused with
403 (nothing attached, nothing acked). Bad syntax is a 400 (``bad-request``),
more pages than ``ATHENA_MAX_PAGES_PER_SESSION`` too.

The stream ends (and the browser's leader tab reconnects with backoff,
replaying from its last ids) when any page's part ends other than by
``gone`` — replaced by a newer stream, cut as a slow consumer, Redis
unreachable — so a connection never carries some pages silently stalled.
"""

from __future__ import annotations

import json
import logging
import re
import weakref
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any, cast

import gevent
from flask import Response, current_app, request, session
from gevent.queue import Empty, Queue
from werkzeug.exceptions import BadRequest, Forbidden

from .endpoint import check_session_key, check_stream_origin
from .protocol import HEARTBEAT_EVENT, sse_event, sse_retry
from .state import SESSION_KEY
from .stream import StreamBody, event_stream_response

if TYPE_CHECKING:
    from .state import AthenaState

logger = logging.getLogger("flask_athena")

#: ``<page>:<last>``; page ids are ``secrets.token_urlsafe`` text.
_PART = re.compile(r"([A-Za-z0-9_-]{1,128}):([0-9]{1,18})")

_ENDED = object()  # a part's body ended without "gone"

#: The newest shared stream of each (app state, session key), while it lives.
_latest: weakref.WeakValueDictionary[tuple[int, str], SharedEventStream] = (
    weakref.WeakValueDictionary()
)


def parse_pages(raw: str, limit: int) -> list[tuple[str, int]]:
    """The ``pages`` query parameter as ``(page_id, last)`` pairs, in order.

    Raises :class:`~werkzeug.exceptions.BadRequest` for bad syntax, a page
    named twice, or more than ``limit`` pages.
    """
    parts: list[tuple[str, int]] = []
    seen: set[str] = set()
    for item in raw.split(","):
        match = _PART.fullmatch(item)
        if match is None:
            raise BadRequest("pages must be a comma-separated list of <page>:<last event id>.")
        page_id, last = match.group(1), int(match.group(2))
        if page_id in seen:
            raise BadRequest("A page is named twice in pages.")
        seen.add(page_id)
        parts.append((page_id, last))
    if len(parts) > limit:
        raise BadRequest(f"At most {limit} pages per shared stream (ATHENA_MAX_PAGES_PER_SESSION).")
    return parts


def shared_events() -> Response:
    """The view of ``GET <prefix>/events``: see the module docstring.

    Runs in the request's greenlet; attaching a page runs its ``connected()``
    hooks (in this request context, as the per-page view does).
    """
    # Imported here: transport imports this module to register the view.
    from .transport import RETRY_MS, page_events

    state: AthenaState = current_app.extensions["athena"]
    parts = parse_pages(request.args.get("pages", ""), state.config.max_pages_per_session)
    key = session.get(SESSION_KEY)
    # Every page is checked before any is attached: a refused request leaves
    # the session's pages as they were. (A page another worker owns is
    # checked by its owner when attached, as for a per-page stream.)
    check_stream_origin(state, request)
    if not isinstance(key, str):
        raise Forbidden("This page belongs to another session.")
    for page_id, _ in parts:
        page = state.pages.get(page_id)
        if page is not None:
            check_session_key(page, key)
    # A browser's tabs have one leader, so a session's newer shared stream
    # replaces its older one (the old leader closed it, or crashed, and the
    # server has not written to it since). Free the older one's pages now,
    # not when its connection is noticed dead: else both would count against
    # ATHENA_MAX_STREAMS_PER_SESSION for a while, and a session with many
    # tabs would be refused.
    older = _latest.get((id(state), key))
    if older is not None:
        older.retire()
    opened: list[tuple[str, Iterable[bytes]]] = []
    done = False
    try:
        for page_id, last in parts:
            # Not an ack: the leader knows what it relayed, not what the
            # tab applied (relays may be in flight); each tab acks its page
            # in its own POSTs, so a tab asking again from an older id after
            # a leader change or a resync still finds its messages.
            response = page_events(page_id, last, ack=False)
            if response.status_code != 200:
                return response  # a Redis owner's refusal: the answer for the whole stream
            # The view's own body (direct_passthrough): an EventStream, a
            # RemoteEventStream, or the one "gone" chunk of gone_response().
            opened.append((page_id, cast("Iterable[bytes]", response.response)))
        done = True
    finally:
        if not done:
            for _, body in opened:
                _close(body)
    stream = SharedEventStream(state, key, opened, RETRY_MS)
    _latest[(id(state), key)] = stream
    return event_stream_response(stream)


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if close is not None:
        close()


class SharedEventStream(StreamBody):
    """The body of one shared stream: every page's part, multiplexed.

    Each part is the body the per-page view would have answered with,
    iterated by a greenlet of its own (a *pump*) into a small bounded queue;
    the connection's greenlet writes what the queue holds, tagged with the
    page. A slow connection fills the queue, the pumps block, and the
    reaper's cut (of the connection, or of a part blocked too long) ends the
    stream: the browser replays from its last ids. :meth:`close` (the WSGI
    server calls it whatever happened) kills and joins the pumps and closes
    every part, so each page is detached as a per-page stream would be.
    """

    __slots__ = ("_parts", "_queue", "_pumps", "_retry_ms", "__weakref__")

    def __init__(
        self,
        state: AthenaState,
        session_key: str,
        parts: list[tuple[str, Iterable[bytes]]],
        retry_ms: int,
    ) -> None:
        super().__init__(state, session_key)
        counts = state.session_streams
        counts[session_key] = counts.get(session_key, 0) + 1  # StreamBody.close() gives it back
        self._parts = parts
        # (page id, chunk or _ENDED); bounded: a slow connection blocks the pumps.
        self._queue: Any = Queue(maxsize=max(4, 2 * len(parts)))
        self._pumps: list[Any] = []
        self._retry_ms = retry_ms
        self._body = self._run()

    def _pump(self, page_id: str, body: Iterable[bytes]) -> None:
        """Runs in a greenlet of its own: one page's part into the queue."""
        gone = False
        try:
            try:
                for chunk in body:
                    self._queue.put((page_id, chunk))
                    gone = gone or b"event: gone\n" in chunk
            except Exception as exc:  # a cut (StreamCut), Redis unreachable: the stream ends
                logger.info("flask_athena: a page's part of a shared stream ended: %s", exc)
            if not gone:  # not after GreenletExit (close() killed it): nobody reads any more
                self._queue.put((page_id, _ENDED))
        finally:
            _close(body)

    def _run(self) -> Generator[bytes, None, None]:
        for page_id, body in self._parts:
            self._pumps.append(gevent.spawn(self._pump, page_id, body))
        yield sse_retry(self._retry_ms)
        heartbeat = self._state.config.heartbeat
        while True:
            try:
                page_id, chunk = self._queue.get(timeout=heartbeat)
            except Empty:
                yield HEARTBEAT_EVENT
                continue
            if chunk is _ENDED:
                return  # the browser reconnects and every page replays from its last id
            out = tag(page_id, chunk)
            if out:
                yield out

    def retire(self) -> None:
        """A newer shared stream of the session took over: free every page now.

        Runs in the newer request's greenlet. Kills and joins the pumps and
        closes the parts (each page detached, its stream count given back);
        this stream's connection then ends at once (or at its next write).
        """
        self._release()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(("", _ENDED))

    def _release(self) -> None:
        gevent.killall(self._pumps, block=True, timeout=5)
        for _, body in self._parts:
            _close(body)


def tag(page_id: str, chunk: bytes) -> bytes:
    """One page's SSE chunk, as the shared stream carries it.

    Messages get the page id as their first data line; ``gone`` names the
    page; per-page heartbeats and ``retry:`` are dropped (the shared stream
    has its own).
    """
    prefix = b"data: " + page_id.encode() + b"\n"
    out: list[bytes] = []
    for frame in chunk.split(b"\n\n"):
        if frame.startswith(b"id: "):
            out.append(prefix + frame + b"\n\n")
        elif frame.startswith(b"event: gone\n"):
            reason = "gone"
            try:
                info = json.loads(frame.split(b"\ndata: ", 1)[1])
                reason = str(info.get("reason", reason))
            except (IndexError, ValueError, AttributeError):
                pass
            out.append(sse_event("gone", {"page": page_id, "reason": reason}))
    return b"".join(out)
