"""A Python client of the flask_athena wire protocol (``docs/protocol.rst``).

It does what ``athena.js`` does, over real sockets, so integration tests can
prove the transport guarantees without a browser:

* GET the page with a :class:`requests.Session` (the session cookie binds the
  page) and read the ``athena-config`` meta tag and the widgets;
* read the event stream (:class:`SSEParser`), track the last event id, drop
  duplicates, answer every server → browser ``call`` that wants a reply, and
  reconnect after any failure with ``Last-Event-ID`` (or ``?last=``), with
  backoff, jitter and a cap, until the server says ``gone``;
* POST sequenced calls one batch at a time; a batch that failed on the network
  is sent again with the *same* seqs (the server answers a retry from its
  record);
* POST results and acks on a separate lane, so they never wait behind a
  running call.

Three threads per client (stream, calls, results); :meth:`ProtocolClient.close`
stops and joins them and closes every session. Every wait has a deadline.
"""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from html import unescape
from typing import Any, Callable

import requests
import urllib3

from flask_athena.sse import SSEEvent as SSEEvent
from flask_athena.sse import SSEParser as SSEParser
from flask_athena.testing import Widget, parse_widgets

_META = re.compile(r'<meta name="athena-config" content="([^"]*)">')

#: Most messages the server accepts in one POST (protocol.MAX_MESSAGES_PER_BATCH).
MAX_BATCH = 512

#: Failures that mean "the network ate it": the same request may be sent again.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    OSError,
)


# -- server-sent events -------------------------------------------------------


class SmallBufferAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose sockets have a small receive buffer.

    A client that stops reading then fills up after a few kilobytes, so the
    server's writes block quickly: what a slow browser looks like.
    """

    def __init__(self, rcvbuf: int = 4096) -> None:
        self._rcvbuf = rcvbuf
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = [
            *urllib3.connection.HTTPConnection.default_socket_options,
            (socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf),
        ]
        super().init_poolmanager(*args, **kwargs)


class EventStream:
    """One open event stream, read synchronously (no thread).

    ``read_timeout`` bounds every socket read; :meth:`next_event` and
    :meth:`events` stop at their own deadline too.
    """

    def __init__(
        self,
        session: requests.Session,
        url: str,
        last_event_id: int | None = None,
        use_query: bool = False,
        read_timeout: float = 5.0,
    ) -> None:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        params = {}
        if last_event_id is not None:
            if use_query:
                params["last"] = str(last_event_id)
            else:
                headers["Last-Event-ID"] = str(last_event_id)
        self.parser = SSEParser()
        self.response = session.get(
            url, headers=headers, params=params, stream=True, timeout=(5.0, read_timeout)
        )
        self._chunks: Iterator[bytes] = self.response.iter_content(chunk_size=None)
        self._ready: deque[SSEEvent] = deque()
        #: Every byte received, for tests that look at the raw framing.
        self.raw = bytearray()
        self.ended = False
        #: The exception that ended the stream, if it did not end cleanly.
        self.error: BaseException | None = None

    @property
    def headers(self) -> Any:
        return self.response.headers

    def next_event(self, timeout: float = 5.0) -> SSEEvent | None:
        """The next event; ``None`` when the stream ended (cleanly or not).

        Raises :class:`TimeoutError` when nothing arrives within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        while not self._ready:
            if self.ended:
                return None
            if time.monotonic() > deadline:
                raise TimeoutError(f"no event within {timeout}s")
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.ended = True
                continue
            except NETWORK_ERRORS as exc:
                # Cut, reset or read timeout: the stream is over either way
                # (requests' generator cannot be resumed after an error).
                self.error = exc
                self.ended = True
                continue
            self.raw += chunk
            self._ready.extend(self.parser.feed(chunk))
        return self._ready.popleft()

    def events(
        self, count: int, timeout: float = 5.0, skip_heartbeats: bool = True
    ) -> list[SSEEvent]:
        """The next ``count`` events (heartbeats skipped unless asked); fewer if the stream ends."""
        deadline = time.monotonic() + timeout
        out: list[SSEEvent] = []
        while len(out) < count:
            event = self.next_event(max(deadline - time.monotonic(), 0.01))
            if event is None:
                break
            if skip_heartbeats and event.event == "heartbeat":
                continue
            out.append(event)
        return out

    def until_end(self, timeout: float = 5.0, limit: int = 100_000) -> list[SSEEvent]:
        """Every event up to the end of the stream (bounded in count and time)."""
        deadline = time.monotonic() + timeout
        out: list[SSEEvent] = []
        for _ in range(limit):
            event = self.next_event(max(deadline - time.monotonic(), 0.01))
            if event is None:
                return out
            out.append(event)
        raise AssertionError(f"the stream sent more than {limit} events")

    def close(self) -> None:
        self.ended = True
        self.response.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- calls ----------------------------------------------------------------------


class CallError(Exception):
    """A call answered with an error (per call, or for the whole request)."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.code = error.get("code")
        self.error = error


@dataclass
class Reply:
    """The answer to one sequenced message."""

    status: int
    seq: int | None
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return "error" not in self.body

    def value(self) -> Any:
        if "error" in self.body:
            raise CallError(self.status, self.body["error"])
        return self.body.get("ok")


@dataclass
class _Outgoing:
    message: dict[str, Any]
    future: Future[Reply]
    seq: int = 0


@dataclass
class ClientStats:
    """What the client went through: the numbers the tests report."""

    stream_connects: int = 0
    stream_failures: int = 0
    duplicates_dropped: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    heartbeats: int = 0
    call_posts: int = 0
    call_retries: int = 0
    result_posts: int = 0
    result_retries: int = 0
    results_sent: int = 0
    unexpected_replies: list[str] = field(default_factory=list)


class Backoff:
    """Exponential backoff with full jitter and a cap (seconds)."""

    def __init__(self, base: float = 0.01, cap: float = 0.25) -> None:
        self.base = base
        self.cap = cap
        self.tries = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.tries))
        self.tries = min(self.tries + 1, 16)
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.tries = 0


Handler = Callable[..., Any]


class ProtocolClient:
    """One browser page, speaking the protocol like ``athena.js``.

    ``open()`` GETs the page; ``connect()`` starts the stream and the POST
    lanes. ``handlers`` maps a method name to ``fn(widget_id, *args)``; its
    return value (or exception) answers server → browser calls. Every
    ``call`` message received is also appended to :attr:`messages` as
    ``(event id, message)``.
    """

    def __init__(
        self,
        base_url: str,
        path: str = "/",
        *,
        heartbeat_timeout: float | None = None,
        batch_size: int = 100,
        ack_every: int = 100,
        ack_interval: float = 0.05,
        post_timeout: float = 10.0,
        retry_deadline: float = 30.0,
        alternate_last_query: bool = True,
        batch_pause: float = 0.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.path = path
        self.session = requests.Session()
        self.config: dict[str, Any] = {}
        self.widgets: list[Widget] = []
        self.handlers: dict[str, Handler] = {}
        self.stats = ClientStats()
        self.messages: list[tuple[int, dict[str, Any]]] = []
        self.last_event_id = 0
        self.gone: str | None = None
        self.gone_event = threading.Event()
        self._heartbeat_timeout = heartbeat_timeout
        self._batch_size = min(batch_size, MAX_BATCH)
        self._ack_every = ack_every
        self._ack_interval = ack_interval
        self._post_timeout = post_timeout
        self._retry_deadline = retry_deadline
        self._alternate_query = alternate_last_query
        self._batch_pause = batch_pause
        self._stop = threading.Event()
        self._lock = threading.Condition()
        self._calls: deque[_Outgoing] = deque()
        self._next_seq = 1
        self._results: list[dict[str, Any]] = []
        self._acked = 0
        self._threads: list[threading.Thread] = []
        self._lane_sessions: list[requests.Session] = []
        self._stream_response: requests.Response | None = None

    # -- setup ----------------------------------------------------------------

    def open(self) -> ProtocolClient:
        response = self.session.get(self.base_url + self.path, timeout=10)
        try:
            response.raise_for_status()
            html = response.text
        finally:
            response.close()
        match = _META.search(html)
        if match is None:
            raise AssertionError("the page has no athena-config meta tag")
        self.config = json.loads(unescape(match.group(1)))
        self.widgets = parse_widgets(html)
        if self._heartbeat_timeout is None:
            self._heartbeat_timeout = 2.5 * self.config["heartbeatMs"] / 1000
        return self

    @property
    def page_id(self) -> str:
        return str(self.config["page"])

    def widget(self, key: str | int) -> int:
        """The id of the widget with id ``key`` or first initial argument ``key``."""
        for widget in self.widgets:
            if widget.id == key or (widget.args and widget.args[0] == key):
                return widget.id
        raise LookupError(key)

    def lane_session(self) -> requests.Session:
        """A new session with this page's cookies (one per thread: not shared)."""
        lane = requests.Session()
        lane.cookies.update(self.session.cookies)
        self._lane_sessions.append(lane)
        return lane

    def post_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Origin": self.base_url,
            "X-Athena-Token": self.config["token"],
        }

    def post_raw(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One POST to the calls endpoint, no retry, seqs as given: for raw checks."""
        response = self.session.post(
            self.base_url + self.config["calls"],
            data=body if isinstance(body, (str, bytes)) else json.dumps(body),
            headers={**self.post_headers(), **(headers or {})},
            timeout=(2.0, self._post_timeout),
        )
        try:
            return response.status_code, response.json() if response.content else None
        finally:
            response.close()

    def stream(self, last_event_id: int | None = None, **kwargs: Any) -> EventStream:
        """Open the event stream synchronously (the caller reads and closes it)."""
        return EventStream(
            self.session, self.base_url + self.config["events"], last_event_id, **kwargs
        )

    def connect(self, stream: bool = True) -> ProtocolClient:
        """Start the lanes (and the event stream unless ``stream=False``)."""
        targets = [self._calls_lane, self._results_lane]
        if stream:
            targets.append(self._stream_loop)
        for target in targets:
            thread = threading.Thread(target=target, name=f"athena-{target.__name__}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    # -- browser → server: sequenced lane -------------------------------------

    def call(self, widget: int, method: str, *args: Any, **kwargs: Any) -> Future[Reply]:
        message = {"type": "call", "widget": widget, "method": method, "args": list(args)}
        if kwargs:
            message["kwargs"] = kwargs
        return self.send(message)

    def detach(self, widget: int) -> Future[Reply]:
        return self.send({"type": "detach", "widget": widget})

    def send(self, message: dict[str, Any]) -> Future[Reply]:
        outgoing = _Outgoing(message, Future())
        with self._lock:
            self._calls.append(outgoing)
            self._lock.notify_all()
        return outgoing.future

    def call_value(
        self, widget: int, method: str, *args: Any, timeout_: float = 15.0, **kwargs: Any
    ) -> Any:
        """Call through the lane; wait ``timeout_`` s for the value (:class:`CallError`)."""
        return self.call(widget, method, *args, **kwargs).result(timeout_).value()

    def _calls_lane(self) -> None:
        lane = self.lane_session()
        backoff = Backoff()
        while not self._stop.is_set():
            with self._lock:
                if not self._calls:
                    self._lock.wait(0.1)
                    continue
                batch = [
                    self._calls.popleft() for _ in range(min(self._batch_size, len(self._calls)))
                ]
            for outgoing in batch:
                outgoing.seq = self._next_seq
                outgoing.message["seq"] = self._next_seq
                self._next_seq += 1
            self._post_batch(lane, batch, backoff)
            if self._batch_pause:
                self._stop.wait(self._batch_pause)  # a page calling over time

    def _post_batch(self, lane: requests.Session, batch: list[_Outgoing], backoff: Backoff) -> None:
        """POST one batch until it is answered; the same seqs on every retry."""
        body = json.dumps({"messages": [o.message for o in batch]})
        deadline = time.monotonic() + self._retry_deadline
        attempt = 0
        while True:
            attempt += 1
            if attempt > 1:
                self.stats.call_retries += 1
            self.stats.call_posts += 1
            status, payload = self._post(lane, body)
            if status is not None and payload is not None and "results" in payload:
                backoff.reset()
                by_seq = {r.get("seq"): r for r in payload["results"]}
                for outgoing in batch:
                    answer = by_seq.get(outgoing.seq)
                    if answer is None:
                        outgoing.future.set_exception(
                            AssertionError(f"no answer for seq {outgoing.seq}")
                        )
                    else:
                        outgoing.future.set_result(Reply(status, outgoing.seq, answer))
                return
            if status is not None and payload is not None and 400 <= status < 500:
                # Nothing in the batch was looked at: its seqs are free again.
                self._next_seq = batch[0].seq
                error = CallError(status, payload.get("error", {}))
                for outgoing in batch:
                    outgoing.future.set_exception(error)
                return
            # The network (or a 5xx) ate it: send the very same batch again.
            if self._stop.is_set() or time.monotonic() > deadline or self.gone_event.is_set():
                lost = ConnectionError(f"batch at seq {batch[0].seq} not answered")
                for outgoing in batch:
                    outgoing.future.set_exception(lost)
                return
            self._stop.wait(backoff.next())

    def _post(self, lane: requests.Session, body: str) -> tuple[int | None, Any]:
        try:
            response = lane.post(
                self.base_url + self.config["calls"],
                data=body,
                headers=self.post_headers(),
                timeout=(2.0, self._post_timeout),
            )
        except NETWORK_ERRORS:
            return None, None
        try:
            payload = response.json()
        except (ValueError, *NETWORK_ERRORS):
            return None, None  # cut mid-body
        finally:
            response.close()
        if response.status_code >= 500:
            return None, None
        return response.status_code, payload

    # -- browser → server: results and acks -----------------------------------

    def _queue_result(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._results.append(message)
            self._lock.notify_all()

    def _results_lane(self) -> None:
        lane = self.lane_session()
        backoff = Backoff()
        while not self._stop.is_set():
            with self._lock:
                if not self._results and self.last_event_id - self._acked < self._ack_every:
                    # Acks go at least every ack_interval; sooner when results
                    # are waiting or ack_every events arrived.
                    self._lock.wait(self._ack_interval)
                results = self._results[:MAX_BATCH]
                del self._results[: len(results)]
                ack = self.last_event_id
            if not results and ack <= self._acked:
                continue
            body = json.dumps({"ack": ack, "messages": results})
            deadline = time.monotonic() + self._retry_deadline
            while True:
                self.stats.result_posts += 1
                status, payload = self._post(lane, body)
                if status == 200:
                    backoff.reset()
                    self.stats.results_sent += len(results)
                    self._acked = max(self._acked, ack)
                    break
                if status is not None:
                    self.stats.unexpected_replies.append(f"results lane: {status} {payload}")
                    break
                if self._stop.is_set() or time.monotonic() > deadline:
                    break
                self.stats.result_retries += 1
                self._stop.wait(backoff.next())

    # -- server → browser -------------------------------------------------------

    def _stream_loop(self) -> None:
        lane = self.lane_session()
        backoff = Backoff()
        use_query = False
        while not self._stop.is_set() and self.gone is None:
            url = self.base_url + self.config["events"]
            assert self._heartbeat_timeout is not None
            try:
                stream = EventStream(
                    lane,
                    url,
                    last_event_id=self.last_event_id,
                    use_query=use_query,
                    read_timeout=self._heartbeat_timeout,
                )
            except NETWORK_ERRORS:
                self.stats.stream_failures += 1
                self._stop.wait(backoff.next())
                continue
            self.stats.stream_connects += 1
            self._stream_response = stream.response
            try:
                self._read_stream(stream, backoff)
            finally:
                self._stream_response = None
                stream.close()
            if self.gone is None:
                self.stats.stream_failures += 1
                self._stop.wait(backoff.next())
            if self._alternate_query:
                use_query = not use_query

    def _read_stream(self, stream: EventStream, backoff: Backoff) -> None:
        if stream.response.status_code != 200:
            self.stats.unexpected_replies.append(f"events: {stream.response.status_code}")
            return
        while not self._stop.is_set():
            try:
                chunk = next(stream._chunks)
            except StopIteration:
                return
            except NETWORK_ERRORS:
                return  # includes the read timeout: 2.5 heartbeats of silence
            for event in stream.parser.feed(chunk):
                backoff.reset()
                self._dispatch(event)
                if self.gone is not None:
                    return

    def _dispatch(self, event: SSEEvent) -> None:
        if event.event == "heartbeat":
            self.stats.heartbeats += 1
            return
        if event.event == "gone":
            self.gone = json.loads(event.data).get("reason", "?")
            self.gone_event.set()
            return
        if event.id is None:
            self.stats.unexpected_replies.append(f"event without id: {event}")
            return
        seq = int(event.id)
        if seq <= self.last_event_id:
            self.stats.duplicates_dropped += 1
            return
        if seq != self.last_event_id + 1:
            self.stats.gaps.append((self.last_event_id, seq))
        message = event.json()
        self.messages.append((seq, message))
        if message.get("type") == "call":
            self._answer(message)
        with self._lock:
            self.last_event_id = seq
            if seq - self._acked >= self._ack_every:
                self._lock.notify_all()

    def _answer(self, message: dict[str, Any]) -> None:
        handler = self.handlers.get(message["method"])
        result: dict[str, Any] = {"type": "result", "call": message["call"]}
        if handler is None:
            result["error"] = {"name": "TypeError", "message": f"no method {message['method']}"}
        else:
            try:
                result["ok"] = handler(message["widget"], *message["args"])
            except Exception as exc:  # the JS method threw: answer with it
                result["error"] = {"name": type(exc).__name__, "message": str(exc)}
        if message.get("call") is not None:
            self._queue_result(result)

    def drop_stream(self) -> None:
        """Close the current event stream from this side (the loop reconnects)."""
        response = self._stream_response
        if response is not None:
            _shutdown(response)

    # -- teardown ----------------------------------------------------------------

    def close_page(self) -> int:
        """The ``pagehide`` beacon: POST close with the token; return the status."""
        lane = self.lane_session()
        response = lane.post(
            self.base_url + self.config["close"],
            data=json.dumps({"token": self.config["token"]}),
            headers={"Content-Type": "application/json", "Origin": self.base_url},
            timeout=5,
        )
        response.close()
        return response.status_code

    def close(self) -> None:
        """Stop every lane, join the threads, close every session."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self.drop_stream()
        for thread in self._threads:
            thread.join(timeout=15)
            if thread.is_alive():
                raise AssertionError(f"{thread.name} did not stop")
        for lane in self._lane_sessions:
            lane.close()
        self.session.close()

    def __enter__(self) -> ProtocolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shutdown(response: requests.Response) -> None:
    """Shut the socket under a streamed response down, waking a blocked reader."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
