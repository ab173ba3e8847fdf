"""The load client: one asyncio process speaking each target's protocol.

Run as ``python -m bench.client`` (the suite starts it, pinned to its own
core); it reads one JSON command per line on stdin and answers one JSON line
on stdout. Several processes may share one server (figure F1 splits ~19k
connections so that no process nears the file-descriptor limit).

Three kinds of connection, one per protocol:

* :class:`AthenaConn`: ``docs/protocol.rst``. ``GET /`` renders a page (its
  own session); the client reads the ``athena-config`` meta tag, opens the
  event stream, and POSTs calls (one sequenced POST in flight per page) and a
  separate *control lane* for results and acks (one in flight; whatever
  arrives meanwhile goes in the next POST, batched), acking like
  ``athena.js``.
* :class:`RawConn`: the raw app's SSE stream and JSON endpoints, with the same
  batching of results.
* :class:`SocketIOConn`: Engine.IO 4 / Socket.IO 5 over a WebSocket.
"""

from __future__ import annotations

import asyncio
import html
import json
import random
import re
import time
from typing import Any

from .wire import EventStream, HttpClient, HttpError, WebSocket

now = time.monotonic
#: athena.js acks at once after ``ackEvery`` unacknowledged messages (256 for
#: the bench's default outbox of 1,000 messages: min(256, 1000 // 4) = 250),
#: else 5 s ± 50 % after the first one; ``Client(ack=...)`` tries another policy.
ACK_POLICY = (250, 5.0)
ACK_DELAY_JITTER = 0.5
#: Every push is ``hear(k, sayer, text)``, as compact JSON in every target.
HEAR = b'"method":"hear","args":['
SIO_HEAR = b'42["hear",['
CONFIG_RE = re.compile(rb'<meta name="athena-config" content="([^"]*)"')


class Phase:
    """Counts pushes ``lo <= k < hi`` until ``expected`` have arrived."""

    def __init__(self, lo: int, hi: int, expected: int) -> None:
        self.lo, self.hi, self.expected = lo, hi, expected
        self.count = 0
        self.first = self.last = 0.0
        self.arrivals: list[float] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if expected <= 0:
            self.done.set_result(None)


class Client:
    """The state shared by every connection of this process."""

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        pool: int,
        ack: tuple[int, float] = ACK_POLICY,
        sources: list[str] | None = None,
    ) -> None:
        self.kind, self.host, self.port = kind, host, port
        self.ack_every, self.ack_delay = ack
        #: Loopback source addresses the streams are spread over (F1): one
        #: address reaches one server port from ~28k ephemeral ports only.
        self.sources = list(sources or ())
        self._next_source = 0
        self.http = HttpClient(host, port, pool)
        self.conns: list[Conn] = []
        self.phase: Phase | None = None
        self.errors: dict[str, int] = {}
        self.closed_streams = 0
        #: the soak: every connection checks that pushes arrive once, in order
        self.check_order = False

    def pushed(self, k: int) -> None:
        phase = self.phase
        if phase is not None and phase.lo <= k < phase.hi:
            t = now()
            phase.count += 1
            if phase.count == 1:
                phase.first = t
            phase.last = t
            if phase.arrivals is not None:
                phase.arrivals.append(t)
            if phase.count >= phase.expected and not phase.done.done():
                phase.done.set_result(None)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def local_addr(self) -> tuple[str, int] | None:
        """The source address of the next long-lived connection (round robin)."""
        if not self.sources:
            return None
        self._next_source = (self._next_source + 1) % len(self.sources)
        return (self.sources[self._next_source], 0)


class Conn:
    """One simulated browser page (or socket)."""

    client: Client
    supports_replay = True
    id = ""

    async def open(self) -> None:
        raise NotImplementedError

    async def call(self, value: Any) -> Any:
        """A browser → server call of ``echo(value)``; return the answer."""
        raise NotImplementedError

    async def drop_stream(self) -> int:
        """Close the stream; return the last event id seen."""
        raise NotImplementedError

    async def reconnect(self, last: int) -> None:
        raise NotImplementedError

    async def leave(self) -> None:
        """Leave the page for good (the soak); by default, close the connection."""
        self.close()

    def close(self) -> None:
        raise NotImplementedError


class SSEConn(Conn):
    """What the raw and Athena connections share: a stream and a control lane."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stream: EventStream | None = None
        self.last_id = 0
        self.acked = 0
        self.last_push = 0  # the soak: the last push k this page received
        self._lane: list[bytes] = []  # queued control messages (results)
        self._lane_busy = False
        self._ack_wanted = False
        self._ack_timer: asyncio.TimerHandle | None = None

    def stream_request(self, last: int) -> bytes:
        raise NotImplementedError

    async def reconnect(self, last: int) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> EventStream:
            self.stream = EventStream(
                self.stream_request(last), self.on_message, self.on_event, self.on_stream_closed
            )
            return self.stream

        _, stream = await loop.create_connection(
            protocol, self.client.host, self.client.port, local_addr=self.client.local_addr()
        )
        await stream.ready

    def on_event(self, name: bytes, data: bytes) -> None:
        if name == b"gone":
            self.client.error("gone:" + data.decode())

    def on_stream_closed(self, stream: EventStream) -> None:
        if stream is self.stream:
            self.client.closed_streams += 1

    def on_message(self, event_id: int, data: bytes) -> None:
        self.last_id = event_id
        # Fast path for pushes (most messages): read k without a JSON parse.
        i = data.find(HEAR)
        if i >= 0:
            i += len(HEAR)
            k = int(data[i : data.index(b",", i)])
            if self.client.check_order:
                if self.last_push and k != self.last_push + 1:
                    self.client.error("push-gap" if k > self.last_push else "push-repeated")
                self.last_push = k
            self.client.pushed(k)
            message = None
        else:
            message = json.loads(data)
        if message is not None and message.get("call") is not None:
            self._lane.append(self.result(message["call"], message["args"][0]))
            self._flush()
        if self.wants_acks:
            unacked = self.last_id - self.acked
            if unacked >= self.client.ack_every:
                self._ack_now()
            elif self._ack_timer is None:
                jitter = 1 + ACK_DELAY_JITTER * (2 * random.random() - 1)
                self._ack_timer = asyncio.get_running_loop().call_later(
                    self.client.ack_delay * jitter, self._ack_now
                )

    def _ack_now(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.last_id > self.acked:
            self._ack_wanted = True
            self._flush()

    wants_acks = False

    def result(self, call: int, value: Any) -> bytes:
        raise NotImplementedError

    async def post_control(self, messages: list[bytes]) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        if not self._lane_busy and (self._lane or self._ack_wanted):
            self._lane_busy = True
            asyncio.get_running_loop().create_task(self._run_lane())

    async def _run_lane(self) -> None:
        try:
            while self._lane or self._ack_wanted:
                messages, self._lane = self._lane, []
                self._ack_wanted = False
                try:
                    await self.post_control(messages)
                except Exception as exc:  # counted and reported; the lane never dies silently
                    self.client.error(f"control:{type(exc).__name__}")
                    return
        finally:
            self._lane_busy = False

    async def drop_stream(self) -> int:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()
        return self.last_id

    def close(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()


class AthenaConn(SSEConn):
    wants_acks = True

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        self.seq = 0
        self.cookie = b""
        self.config: dict[str, Any] = {}
        self.post_headers = b""

    async def open(self) -> None:
        status, headers, body = await self.client.http.request("GET", "/")
        match = CONFIG_RE.search(body)
        if status != 200 or match is None:
            raise HttpError(f"page answered {status}")
        self.config = json.loads(html.unescape(match.group(1).decode()))
        self.id = self.config["page"]
        self.cookie = headers["set-cookie"].split(";", 1)[0].encode()
        origin = f"http://{self.client.host}:{self.client.port}"
        self.post_headers = (
            b"Content-Type: application/json\r\nOrigin: "
            + origin.encode()
            + b"\r\nX-Athena-Token: "
            + self.config["token"].encode()
            + b"\r\nCookie: "
            + self.cookie
            + b"\r\n"
        )
        await self.reconnect(0)

    def stream_request(self, last: int) -> bytes:
        events: str = self.config["events"]
        return (
            b"GET "
            + events.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.client.http.hostport
            + b"\r\nAccept: text/event-stream\r\nCookie: "
            + self.cookie
            + b"\r\nLast-Event-ID: "
            + str(last).encode()
            + b"\r\n\r\n"
        )

    def result(self, call: int, value: Any) -> bytes:
        return b'{"type":"result","call":%d,"ok":%s}' % (call, json.dumps(value).encode())

    async def _post(self, messages: list[bytes]) -> bytes:
        ack = self.last_id
        body = b'{"ack":%d,"messages":[%s]}' % (ack, b",".join(messages))
        # Idempotent (docs/protocol.rst): a sequenced batch sent again is answered
        # from the server's record; results and acks may arrive twice.
        status, _, reply = await self.client.http.request(
            "POST", self.config["calls"], body, self.post_headers, idempotent=True
        )
        if status != 200:
            raise HttpError(f"calls answered {status}: {reply[:200]!r}")
        self.acked = max(self.acked, ack)
        return reply

    async def post_control(self, messages: list[bytes]) -> None:
        await self._post(messages)

    async def leave(self) -> None:
        """What a browser does when the page is left: the stream ends, the beacon says so."""
        self.close()
        body = json.dumps({"token": self.config["token"]}).encode()
        status, _, reply = await self.client.http.request(
            "POST", self.config["close"], body, self.post_headers, idempotent=True
        )
        if status != 204:
            raise HttpError(f"close answered {status}: {reply[:200]!r}")

    async def call(self, value: Any) -> Any:
        self.seq += 1
        message = b'{"seq":%d,"type":"call","widget":1,"method":"echo","args":[%s]}' % (
            self.seq,
            json.dumps(value).encode(),
        )
        reply = json.loads(await self._post([message]))
        return reply["results"][0]["ok"]


class RawConn(SSEConn):
    async def open(self) -> None:
        status, _, body = await self.client.http.request(
            "POST", "/open", b"{}", b"Content-Type: application/json\r\n"
        )
        if status != 200:
            raise HttpError(f"open answered {status}")
        self.id = json.loads(body)["id"]
        await self.reconnect(0)

    def stream_request(self, last: int) -> bytes:
        return (
            b"GET /events/"
            + self.id.encode()
            + b" HTTP/1.1\r\nHost: "
            + self.client.http.hostport
            + b"\r\nAccept: text/event-stream\r\nLast-Event-ID: "
            + str(last).encode()
            + b"\r\n\r\n"
        )

    def result(self, call: int, value: Any) -> bytes:
        return b'{"call":%d,"ok":%s}' % (call, json.dumps(value).encode())

    async def post_control(self, messages: list[bytes]) -> None:
        body = b'{"results":[%s]}' % b",".join(messages)
        status, _, reply = await self.client.http.request(
            "POST",
            "/results/" + self.id,
            body,
            b"Content-Type: application/json\r\n",
            idempotent=True,  # a result answered twice is ignored
        )
        if status != 200:
            raise HttpError(f"results answered {status}")

    async def call(self, value: Any) -> Any:
        body = b'{"method":"echo","args":[%s]}' % json.dumps(value).encode()
        status, _, reply = await self.client.http.request(
            "POST", "/call", body, b"Content-Type: application/json\r\n", idempotent=True
        )
        if status != 200:
            raise HttpError(f"call answered {status}")
        return json.loads(reply)["ok"]


class SocketIOConn(Conn):
    supports_replay = False

    def __init__(self, client: Client) -> None:
        self.client = client
        self.ws: WebSocket | None = None
        self._connected: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next_ack = 0
        self._acks: dict[int, asyncio.Future[Any]] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> WebSocket:
            # Set before any byte arrives: the server's first packets may be
            # handled before create_connection() returns.
            self.ws = WebSocket(
                self.client.host,
                self.client.port,
                "/socket.io/?EIO=4&transport=websocket",
                self.on_text,
                self.on_close,
            )
            return self.ws

        _, ws = await loop.create_connection(
            protocol, self.client.host, self.client.port, local_addr=self.client.local_addr()
        )
        await ws.ready
        await self._connected

    def on_text(self, payload: bytes) -> None:
        kind = payload[:1]
        if kind == b"2":  # Engine.IO ping
            assert self.ws is not None
            self.ws.send_text(b"3")
        elif kind == b"4":  # Socket.IO packet
            sio = payload[1:2]
            if payload.startswith(SIO_HEAR):  # fast path for pushes
                i = len(SIO_HEAR)
                self.client.pushed(int(payload[i : payload.index(b",", i)]))
            elif sio == b"2":  # EVENT, maybe with an ack id
                i = 2
                while payload[i : i + 1].isdigit():
                    i += 1
                event = json.loads(payload[i:])
                if event[0] == "hear":
                    self.client.pushed(event[1][0])
                elif i > 2 and self.ws is not None:  # a call: answer it
                    self.ws.send_text(
                        b"43" + payload[2:i] + b"[" + json.dumps(event[1]).encode() + b"]"
                    )
            elif sio == b"3":  # ACK of our call
                i = 2
                while payload[i : i + 1].isdigit():
                    i += 1
                waiter = self._acks.pop(int(payload[2:i]), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(json.loads(payload[i:])[0])
            elif sio == b"0":  # CONNECT answered
                self.id = json.loads(payload[2:])["sid"]
                if not self._connected.done():
                    self._connected.set_result(None)
            elif sio == b"4" and not self._connected.done():
                self._connected.set_exception(HttpError(payload.decode()))
        elif kind == b"0":  # Engine.IO open: join the default namespace
            assert self.ws is not None
            self.ws.send_text(b"40")

    def on_close(self, ws: WebSocket) -> None:
        if ws is self.ws:
            self.client.closed_streams += 1
        if not self._connected.done():
            self._connected.set_exception(ConnectionError("closed before connect"))

    async def call(self, value: Any) -> Any:
        assert self.ws is not None
        self._next_ack += 1
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._acks[self._next_ack] = waiter
        self.ws.send_text(b'42%d["echo",%s]' % (self._next_ack, json.dumps(value).encode()))
        return await waiter

    def close(self) -> None:
        if self.ws is not None:
            ws, self.ws = self.ws, None
            ws.close()


class BareConn(RawConn):
    """The ``bare`` target: calls only (``POST /call``), no page and no stream."""

    supports_replay = False

    async def open(self) -> None:
        return None


KINDS: dict[str, type[Conn]] = {
    "athena": AthenaConn,
    "raw": RawConn,
    "socketio": SocketIOConn,
    "bare": BareConn,
}
