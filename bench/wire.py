"""Small asyncio clients for HTTP/1.1, Server-Sent Events and WebSocket.

The load generator must not be the bottleneck, so these are bare
``asyncio.Protocol`` implementations: no per-request tasks, no header
objects, one buffer per connection. They speak only what the benchmark
servers answer (gunicorn's gevent workers): ``Content-Length`` bodies,
chunked event streams, unfragmented WebSocket text frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Callable, cast

from flask_athena.sse import SSEParser

Response = tuple[int, dict[str, str], bytes]


class HttpError(Exception):
    """The server answered something this client does not expect."""


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


#: A kept-alive connection idle for longer than this is closed instead of
#: reused: well under the servers' keep-alive timeout (gunicorn
#: ``--keep-alive 75``), as browsers do, so that a request seldom meets a
#: connection the server is closing at that very moment.
MAX_IDLE = 30.0


class NotSent(ConnectionError):
    """The request was never written: the connection was closed or closing.

    Always safe to retry on another connection, whatever the method.
    """


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.closed = False
        self.used = False
        self.idle_since = 0.0
        self._head: tuple[int, dict[str, str], int, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence cast.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None:
            return  # unsolicited bytes (an error page before closing): see reusable()
        if self._head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            try:
                status, headers = _parse_head(bytes(self.buf[:end]))
            except HttpError as exc:
                self._fail(exc)
                return
            if "chunked" in headers.get("transfer-encoding", ""):
                self._fail(HttpError("chunked reply to a plain request"))
                return
            self._head = (status, headers, int(headers.get("content-length", "0")), end + 4)
        status, headers, length, start = self._head
        if len(self.buf) - start < length:
            return
        body = bytes(self.buf[start : start + length])
        del self.buf[: start + length]
        self._head = None
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((status, headers, body))

    def _fail(self, exc: Exception) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionError("connection closed before the whole reply"))

    def reusable(self, now: float, max_idle: float) -> bool:
        """Whether a request may be written here: open, quiet, not idle too long."""
        transport = self.transport
        return (
            not self.closed
            and transport is not None
            and not transport.is_closing()
            and self.waiter is None
            and not self.buf
            and now - self.idle_since <= max_idle
        )

    def send(self, raw: bytes) -> asyncio.Future[Response]:
        """Write one request; the future resolves with its reply.

        Raises :class:`NotSent` (nothing was written) if the connection is
        closed or closing: uvloop raises ``RuntimeError("unable to perform
        operation on <TCPTransport closed=True ...>")`` on such a write, and
        asyncio's own transports drop the bytes silently, so that the reply
        would never come.
        """
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise NotSent("the connection was closed before the request was written")
        assert self.waiter is None
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            transport.write(raw)
        except (RuntimeError, OSError) as exc:
            self.waiter = None
            waiter.cancel()
            self.close()
            raise NotSent(f"the request could not be written: {exc}") from exc
        self.used = True
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpClient:
    """A bounded pool of keep-alive connections to one server.

    A request meets a connection the server closed (its keep-alive timeout,
    an error, a restart) in one of two ways, and both are survived:

    * the close was seen before the request was written (or the write
      failed): the connection is dropped and the request goes out on another
      one, whatever the method;
    * the server closed the connection after the request was written and
      before the whole reply came: the request is sent once more on a new
      connection only if it is ``idempotent`` (``GET``, and the POSTs a
      caller says are: flask_athena's calls, whose sequenced batches are
      answered from the server's record, results and acks), and only if the
      connection was a reused one (a fresh connection failing is an error).

    Idle connections older than ``max_idle`` are closed instead of reused.
    """

    def __init__(self, host: str, port: int, size: int = 64, max_idle: float = MAX_IDLE) -> None:
        self.host, self.port = host, port
        self.hostport = f"{host}:{port}".encode()
        self.max_idle = max_idle
        self._idle: list[HttpConnection] = []
        self._slots = asyncio.Semaphore(size)
        self.requests = 0
        #: connections opened, requests sent again, idle connections dropped
        self.connects = 0
        self.retries = 0
        self.stale = 0

    async def _connect(self) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(HttpConnection, self.host, self.port)
        self.connects += 1
        return conn

    async def _take(self) -> HttpConnection:
        t = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable(t, self.max_idle):
                return conn
            self.stale += 1
            conn.close()
        return await self._connect()

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: bytes = b"",
        idempotent: bool | None = None,
    ) -> Response:
        """``headers`` is a pre-built block of ``Name: value\\r\\n`` lines.

        ``idempotent`` (default: ``GET`` and ``HEAD`` only) allows sending the
        request again after the server closed a kept-alive connection under it.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")
        raw = b"".join(
            (
                method.encode(),
                b" ",
                path.encode(),
                b" HTTP/1.1\r\nHost: ",
                self.hostport,
                b"\r\nContent-Length: ",
                str(len(body)).encode(),
                b"\r\n",
                headers,
                b"\r\n",
                body,
            )
        )
        async with self._slots:
            for attempt in (1, 2):
                conn = await self._take()
                reused = conn.used
                try:
                    response = await conn.send(raw)
                except NotSent:
                    if attempt == 1:
                        self.retries += 1
                        continue
                    raise
                except ConnectionError:
                    conn.close()
                    if attempt == 1 and reused and idempotent:
                        self.retries += 1
                        continue
                    raise
                except BaseException:  # cancelled or a bad reply: never reuse it
                    conn.close()
                    raise
                self.requests += 1
                if response[1].get("connection", "").lower() == "close" or conn.closed:
                    conn.close()
                else:
                    conn.idle_since = time.monotonic()
                    self._idle.append(conn)
                return response
        raise AssertionError("unreachable")

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class EventStream(asyncio.Protocol):
    """``GET`` a ``text/event-stream`` and hand each event to callbacks.

    ``on_message(id, data)`` for events with an ``id:`` (data as bytes),
    ``on_event(name, data)`` for named events without one; comments and
    ``retry:`` are skipped. ``ready`` resolves with the first body bytes.
    """

    def __init__(
        self,
        request: bytes,
        on_message: Callable[[int, bytes], None],
        on_event: Callable[[bytes, bytes], None],
        on_close: Callable[[EventStream], None],
    ) -> None:
        self.request = request
        self.on_message = on_message
        self.on_event = on_event
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._in_body = False
        self._raw = b""  # undecoded chunked bytes
        self._left = 0  # bytes left in the current chunk
        self._crlf = False  # a chunk's trailing CRLF is due
        self._parser = SSEParser()  # flask_athena's, shared with the tests

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._raw += data
            end = self._raw.find(b"\r\n\r\n")
            if end < 0:
                return
            status, headers = _parse_head(self._raw[:end])
            data, self._raw = self._raw[end + 4 :], b""
            if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
                if not self.ready.done():
                    self.ready.set_exception(HttpError(f"stream answered {status}"))
                self.close()
                return
            self._in_body = True
            if not data:
                return
        buf = self._raw + data if self._raw else data
        pos, end, out = 0, len(buf), []
        while True:
            if self._left:
                take = min(self._left, end - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            if self._crlf:
                if end - pos < 2:
                    break
                pos += 2
                self._crlf = False
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                break
            size = int(buf[pos:nl].split(b";", 1)[0], 16)
            pos = nl + 2
            if size == 0:
                self.close()
                break
            self._left = size
        self._raw = buf[pos:]
        if out:
            self._feed(b"".join(out) if len(out) > 1 else out[0])

    def _feed(self, data: bytes) -> None:
        if not self.ready.done():
            self.ready.set_result(0)
        on_message = self.on_message
        for event in self._parser.feed(data):
            if event.id is not None:
                on_message(int(event.id), event.data.encode())
            elif event.event != "message":
                self.on_event(event.event.encode(), event.data.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("stream closed before it started"))
        self.on_close(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


class WebSocket(asyncio.Protocol):
    """A WebSocket client: the upgrade, then text frames both ways.

    ``on_text(payload)`` for each text message; pings are answered here.
    Client frames are masked with a fresh random key, as RFC 6455 requires.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        on_text: Callable[[bytes], None],
        on_close: Callable[[WebSocket], None],
    ) -> None:
        key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.on_text = on_text
        self.on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False
        self._open = False
        self._buf = b""
        self._partial = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence cast.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            status, _ = _parse_head(buf[:end])
            if status != 101:
                if not self.ready.done():
                    self.ready.set_exception(HttpError(f"upgrade answered {status}"))
                self.close()
                return
            self._open = True
            if not self.ready.done():
                self.ready.set_result(0)
            buf = buf[end + 4 :]
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if b1 & 0x80:
                head += 4  # servers never mask; skip a key if one came anyway
            if end - pos < head + length:
                break
            payload = buf[pos + head : pos + head + length]
            pos += head + length
            opcode = b0 & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                if not b0 & 0x80:  # fragment: keep until FIN
                    self._partial += payload
                    continue
                if self._partial:
                    payload, self._partial = self._partial + payload, b""
                self.on_text(payload)
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.close()
                break
        self._buf = buf[pos:]

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.closed:
            return
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | opcode, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
        key = os.urandom(4)
        self.transport.write(head + key + _mask(payload, key))

    def send_text(self, payload: bytes) -> None:
        self._send(0x1, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the upgrade"))
        self.on_close(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
