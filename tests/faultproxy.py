"""A TCP proxy on 127.0.0.1 that breaks connections on command.

It sits between a test client and the gunicorn server and forwards bytes both
ways, understanding just enough HTTP/1.1 to tell requests apart (the first
line of each request on a connection). On command it can:

* :meth:`FaultProxy.cut_all` — close every connection, with a FIN
  (``"close"``) or an RST (``"reset"``, ``SO_LINGER`` 0);
* :meth:`FaultProxy.cut_streams` — cut only event streams, the same two ways
  or ``"mid"``: forward the next numbered SSE message only up to the middle
  of its ``data:`` line, then close;
* :meth:`FaultProxy.cut_in_flight` — cut connections whose request is
  waiting for its response (did the server run it or not?);
* :meth:`FaultProxy.drop_response` — forward a request whose bytes contain a
  marker, let the server answer it, swallow the answer and cut the
  connection (the "lost POST response");
* :meth:`FaultProxy.truncate_request` — forward only the first half of a
  request, then cut (a body that never fully arrives);
* :meth:`FaultProxy.stall` / :meth:`FaultProxy.resume` — hold every byte in
  both directions (old and new connections) until resumed;
* :meth:`FaultProxy.start_outage` / :meth:`FaultProxy.end_outage` — cut every
  connection, then reset every new one as soon as its request line arrives
  (a network error, not an HTTP error: what an engine's own ``EventSource``
  retry reacts to), recording each refused request
  (:meth:`FaultProxy.refused_requests`), so a test can count reconnect
  attempts in any engine.

The proxy runs an asyncio loop in one thread; the public methods are called
from the test's thread and wait (with a deadline) for the loop to act.
:meth:`FaultProxy.stop` closes every socket and joins the thread.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")

_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"DELETE ", b"OPTIONS ", b"PATCH ")


@dataclass
class ProxyStats:
    """Counts of what the proxy did (the numbers a test reports)."""

    connections: int = 0
    cuts_close: int = 0
    cuts_reset: int = 0
    cuts_mid: int = 0
    dropped_responses: int = 0
    stalls: int = 0
    #: Connections cut, by kind, over the proxy's life.
    cut_connections: dict[str, int] = field(default_factory=dict)


class _Pipe:
    """One client connection and its upstream connection."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []  # client bytes before upstream connected
        self.held: list[tuple[str, bytes]] = []  # bytes held while stalled
        self.request = b""  # bytes of the current request (capped)
        self.awaiting_response = False
        self.cut_mid = False
        self.drop = False
        self.truncate = False
        self.refused = False  # accepted during an outage: never forwarded
        self.closed = False

    @property
    def first_line(self) -> bytes:
        return self.request.split(b"\r\n", 1)[0]

    @property
    def is_stream(self) -> bool:
        line = self.first_line
        return line.startswith(b"GET ") and b"/events" in line

    # -- client → upstream ----------------------------------------------------

    def from_client(self, data: bytes) -> None:
        if not self.awaiting_response and data.startswith(_METHODS):
            self.request = b""  # a new request on a kept-alive connection
            if self.proxy._take_truncate(data):
                # The server gets a request cut short: headers, part of the body.
                data = data[: len(data) // 2]
                self.truncate = True
        if len(self.request) < 65536:
            self.request += data[: 65536 - len(self.request)]
        self.awaiting_response = True
        if self.truncate:
            if self.upstream is None:
                self.early.append(data)
                return  # closed once the upstream connection has the bytes
            self.upstream.write(data)
            self.close("truncate")
            return
        if self.proxy._stalled:
            self.held.append(("up", data))
        elif self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    # -- upstream → client ----------------------------------------------------

    def from_upstream(self, data: bytes) -> None:
        if self.awaiting_response:
            self.awaiting_response = False
            self.drop = self.drop or self.proxy._take_drop(self.request)
        if self.drop:
            # The server has answered (so it ran the request); the client
            # never sees the answer.
            self.proxy.stats.dropped_responses += 1
            self.close("drop")
            return
        if self.proxy._stalled:
            self.held.append(("down", data))
        else:
            self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        assert self.client is not None
        partial = _cut_inside_message(data) if self.cut_mid else None
        if partial is None:
            self.client.write(data)
        else:
            self.client.write(partial)
            self.close("mid")

    def release(self) -> None:
        held, self.held = self.held, []
        for direction, data in held:
            if self.closed:
                return
            if direction == "up":
                if self.upstream is None:
                    self.early.append(data)
                else:
                    self.upstream.write(data)
            else:
                self._deliver(data)

    # -- ending -----------------------------------------------------------------

    def close(self, how: str = "close") -> None:
        """End both sides: FIN after flushing (close/mid/drop/truncate/eof), RST
        (reset), or at once (stop)."""
        if self.closed:
            return
        self.closed = True
        self.held.clear()
        self.early.clear()
        self.proxy._pipes.discard(self)
        counts = self.proxy.stats.cut_connections
        if how not in ("eof", "stop"):
            counts[how] = counts.get(how, 0) + 1
        for transport in (self.client, self.upstream):
            if transport is None or transport.is_closing():
                continue
            if how == "reset":
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                transport.abort()
            elif how == "stop":
                transport.abort()
            else:
                transport.close()


_CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]+)\r\n")


def _cut_inside_message(data: bytes) -> bytes | None:
    """What to send of ``data`` so the client gets half an SSE message.

    The event stream is HTTP/1.1 chunked. Cutting the raw bytes would only
    truncate a chunk, which the client's HTTP layer discards; so when the
    cut falls inside a chunk, that chunk is re-framed as a complete chunk
    holding the first half of the message: the client's SSE parser itself
    receives the half message. ``None`` when ``data`` holds no numbered
    message.
    """
    cut = _mid_message(data)
    if cut is None:
        return None
    pos = 0
    while True:
        header = _CHUNK_HEADER.match(data, pos)
        if header is None:
            return data[:cut]  # not at a chunk boundary: a raw cut
        start, size = header.end(), int(header.group(1), 16)
        if cut <= start + size:
            half = data[start:cut]
            return data[:pos] + b"%X\r\n" % len(half) + half + b"\r\n"
        pos = start + size + 2


def _mid_message(data: bytes) -> int | None:
    """A cut point inside the ``data:`` line of the first numbered SSE message
    in ``data``; ``None`` when ``data`` has none (a heartbeat: keep waiting)."""
    start = data.find(b"id: ")
    if start < 0:
        return None
    start = data.find(b"data: ", start)
    if start < 0:
        return None
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    return start + max(1, (end - start) // 2)


def _take(armed: list[list[Any]], request: bytes) -> bool:
    """Use up one armed ``[marker, remaining]`` entry matching ``request``."""
    for entry in armed:
        if entry[0] in request:
            entry[1] -= 1
            if entry[1] <= 0:
                armed.remove(entry)
            return True
    return False


class _ClientSide(asyncio.Protocol):
    def __init__(self, proxy: FaultProxy) -> None:
        self.pipe = _Pipe(proxy)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        proxy = self.pipe.proxy
        if proxy._closing:
            # Accepted as the proxy stops (its callback ran after the pipes
            # were closed): left open, it would leak until garbage collection.
            transport.abort()
            return
        proxy.stats.connections += 1
        self.pipe.client = transport
        proxy._transports.append(transport)
        proxy._pipes.add(self.pipe)
        if proxy._refusing:
            self.pipe.refused = True  # no upstream: reset once the request line is in
            return
        task = asyncio.get_running_loop().create_task(self._connect_upstream())
        proxy._tasks.add(task)
        task.add_done_callback(proxy._tasks.discard)

    async def _connect_upstream(self) -> None:
        pipe = self.pipe
        try:
            transport, _ = await asyncio.get_running_loop().create_connection(
                lambda: _UpstreamSide(pipe), pipe.proxy.upstream_host, pipe.proxy.upstream_port
            )
        except OSError:
            pipe.close("eof")
            return
        if pipe.closed:
            transport.abort()
            return
        assert isinstance(transport, asyncio.Transport)
        pipe.proxy._transports.append(transport)
        pipe.upstream = transport
        early, pipe.early = pipe.early, []
        for data in early:
            transport.write(data)
        if pipe.truncate:
            pipe.close("truncate")

    def data_received(self, data: bytes) -> None:
        if self.pipe.refused:
            if not self.pipe.closed:
                line = data.split(b"\r\n", 1)[0]
                self.pipe.proxy._refused.append((time.monotonic(), line.decode("latin-1")))
                self.pipe.close("reset")
            return
        if not self.pipe.closed:
            self.pipe.from_client(data)

    def eof_received(self) -> bool:
        pipe = self.pipe
        if pipe.refused:
            pipe.close("eof")
            return False
        upstream = pipe.upstream
        if pipe.held or pipe.early or upstream is None or upstream.is_closing():
            # Bytes still held back would have to follow the EOF: the client
            # is gone, so they are dropped with the connection.
            pipe.close("eof")
            return False
        upstream.write_eof()  # half-close, like the client did
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close("eof")

    # Flow control: a client that reads slowly slows the server down (the
    # proxy never buffers without bound).
    def pause_writing(self) -> None:
        _pause(self.pipe.upstream, True)

    def resume_writing(self) -> None:
        _pause(self.pipe.upstream, False)


def _pause(transport: asyncio.Transport | None, pause: bool) -> None:
    if transport is None or transport.is_closing():
        return
    if pause:
        transport.pause_reading()
    else:
        transport.resume_reading()


class _UpstreamSide(asyncio.Protocol):
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def pause_writing(self) -> None:
        _pause(self.pipe.client, True)

    def resume_writing(self) -> None:
        _pause(self.pipe.client, False)

    def data_received(self, data: bytes) -> None:
        if not self.pipe.closed:
            self.pipe.from_upstream(data)

    def eof_received(self) -> bool:
        self.pipe.close("eof")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.pipe.close("eof")


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_port``; break things on command."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.stats = ProxyStats()
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Every connection's transports: one closed with a FIN may still be
        #: flushing when the proxy stops, and is aborted then.
        self._transports: list[asyncio.Transport] = []
        self._drops: list[list[Any]] = []  # [marker, remaining]
        self._truncates: list[list[Any]] = []
        self._stalled = False
        self._refusing = False
        #: Set when the proxy stops: a connection accepted then is aborted at once.
        self._closing = False
        self._refused: list[tuple[float, str]] = []  # (time.monotonic(), request line)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        if self._error is not None:
            raise RuntimeError("the fault proxy failed to start") from self._error
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die noisily
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await self._loop.create_server(
            lambda: _ClientSide(self), "127.0.0.1", 0, reuse_address=True
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            self._closing = True
            server.close()
            for pipe in list(self._pipes):
                pipe.close("stop")
            for transport in self._transports:
                transport.abort()  # a no-op once its socket is closed
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await server.wait_closed()
            for pipe in list(self._pipes):  # added while the tasks were cancelled
                pipe.close("stop")
            for _ in range(3):
                await asyncio.sleep(0)  # let aborted transports finish closing

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        if self._thread.is_alive():
            raise RuntimeError("the fault proxy thread did not stop")
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the proxy's loop and return its result (deadline 10 s)."""
        assert self._loop is not None

        async def call() -> T:
            return fn()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        return future.result(timeout=10)

    # -- faults -----------------------------------------------------------------

    def cut_all(self, mode: str = "close") -> int:
        """Cut every open connection (``"close"``: FIN, ``"reset"``: RST); return how many."""
        if mode not in ("close", "reset"):
            raise ValueError(mode)

        def cut() -> int:
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.close(mode)
            return len(pipes)

        count = self._on_loop(cut)
        if mode == "close":
            self.stats.cuts_close += 1
        else:
            self.stats.cuts_reset += 1
        return count

    def cut_streams(self, mode: str = "mid") -> int:
        """Cut every open event stream; ``"mid"`` cuts inside the next numbered message
        (heartbeats pass), so a half message reaches the client."""
        if mode not in ("close", "reset", "mid"):
            raise ValueError(mode)

        def cut() -> int:
            pipes = [p for p in self._pipes if p.is_stream]
            for pipe in pipes:
                if mode == "mid":
                    pipe.cut_mid = True
                else:
                    pipe.close(mode)
            return len(pipes)

        count = self._on_loop(cut)
        if mode == "mid":
            self.stats.cuts_mid += 1
        elif mode == "close":
            self.stats.cuts_close += 1
        else:
            self.stats.cuts_reset += 1
        return count

    def drop_response(self, marker: bytes, count: int = 1) -> None:
        """Swallow the answers to the next ``count`` requests containing ``marker``."""

        def arm() -> None:
            self._drops.append([marker, count])

        self._on_loop(arm)

    def truncate_request(self, marker: bytes, count: int = 1) -> None:
        """Forward only the first half of the next ``count`` requests containing
        ``marker`` (in their first packet), then close the connection."""

        def arm() -> None:
            self._truncates.append([marker, count])

        self._on_loop(arm)

    def cut_in_flight(self, mode: str = "reset") -> int:
        """Cut every connection whose request awaits its response (not streams)."""
        if mode not in ("close", "reset"):
            raise ValueError(mode)

        def cut() -> int:
            pipes = [p for p in self._pipes if p.awaiting_response and not p.is_stream]
            for pipe in pipes:
                pipe.close(mode)
            return len(pipes)

        return self._on_loop(cut)

    def drops_pending(self) -> int:
        return self._on_loop(lambda: sum(remaining for _, remaining in self._drops))

    def _take_drop(self, request: bytes) -> bool:
        return _take(self._drops, request)

    def _take_truncate(self, request: bytes) -> bool:
        return _take(self._truncates, request)

    def stall(self) -> None:
        """Hold every byte, both ways, until :meth:`resume`."""

        def hold() -> None:
            self._stalled = True

        self._on_loop(hold)
        self.stats.stalls += 1

    def resume(self) -> None:
        def release() -> None:
            self._stalled = False
            for pipe in list(self._pipes):
                pipe.release()

        self._on_loop(release)

    def start_outage(self, mode: str = "reset") -> int:
        """Cut every connection (``mode`` as :meth:`cut_all`) and refuse new ones
        until :meth:`end_outage`; return how many were cut."""
        if mode not in ("close", "reset"):
            raise ValueError(mode)

        def begin() -> int:
            self._refusing = True
            pipes = list(self._pipes)
            for pipe in pipes:
                pipe.close(mode)
            return len(pipes)

        return self._on_loop(begin)

    def end_outage(self) -> None:
        """Accept connections again (ones refused but still open are closed)."""

        def end() -> None:
            self._refusing = False
            for pipe in list(self._pipes):
                if pipe.refused:
                    pipe.close("reset")

        self._on_loop(end)

    def refused_requests(self) -> list[tuple[float, str]]:
        """The requests refused during outages, in order: ``(time.monotonic(),
        request line)``, the line as ``GET /x HTTP/1.1``."""
        return self._on_loop(lambda: list(self._refused))

    def open_connections(self) -> int:
        return self._on_loop(lambda: len(self._pipes))
