"""The benchmark's load client survives keep-alive connections the server closes.

``bench/wire.py``'s :class:`HttpClient` against a tiny asyncio server on
127.0.0.1 (no gunicorn): a request never meets a connection the server has
closed, an idempotent request the server dropped unanswered is sent again on a
new connection, a non-idempotent one is not. Run on asyncio's loop and, when
it is installed, on uvloop (which raises on a write to a closed transport
where asyncio silently drops the bytes).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from bench.wire import HttpClient

LOOPS: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
try:
    import uvloop
except ImportError:  # pragma: no cover - optional
    pass
else:
    LOOPS.append(pytest.param(uvloop.new_event_loop, id="uvloop"))


class Server:
    """Answers ``answered`` requests per connection, then closes it.

    ``drop_next``: after the answered ones, read one more request and close
    without answering (the server closed while the request was on its way).
    """

    def __init__(self, answered: int, drop_next: bool) -> None:
        self.answered, self.drop_next = answered, drop_next
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return await reader.readexactly(length)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for _ in range(self.answered):
                body = await self._read_request(reader)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()
            if self.drop_next:
                await self._read_request(reader)
                self.requests += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


def run(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Callable[[], Awaitable[None]]
) -> None:
    """Run ``main()`` on a new loop in a thread of its own: in the full suite
    the browser tests' Playwright keeps a loop running in the main thread."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(main())  # type: ignore[arg-type]
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="bench-wire-test")
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the test's event loop did not finish in 60 s"
    if errors:
        raise errors[0]


async def closed_seen(client: HttpClient) -> None:
    """Wait until the client has seen the server close its idle connection."""
    for _ in range(200):
        if all(conn.closed for conn in client._idle):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the server's close was never seen")


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_closed_keepalive_connection_is_never_written_to(loop_factory: Any) -> None:
    async def main() -> None:
        async with Server(answered=1, drop_next=False) as server:
            client = HttpClient("127.0.0.1", server.port, size=4)
            try:
                for i in range(3):
                    status, _, body = await client.request("POST", "/x", b"%d" % i)
                    assert (status, body) == (200, b"%d" % i)
                    await closed_seen(client)
            finally:
                client.close()
            assert server.connections == 3
            assert client.stale == 2  # each closed connection was dropped, not written to
            assert client.retries == 0
            await asyncio.sleep(0.01)  # let the transports finish closing

    run(loop_factory, main)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_write_on_a_closed_transport_is_sent_again(loop_factory: Any) -> None:
    async def main() -> None:
        async with Server(answered=2, drop_next=False) as server:
            client = HttpClient("127.0.0.1", server.port, size=4)
            try:
                assert (await client.request("POST", "/x", b"a"))[0] == 200
                conn = client._idle[0]
                assert conn.transport is not None
                # Closed under the pool's feet, as a connection_lost() that has
                # not run yet: the request must go out on a new connection.
                conn.transport.close()
                status, _, body = await client.request("POST", "/x", b"b")
                assert (status, body) == (200, b"b")
            finally:
                client.close()
            assert server.connections == 2
            await asyncio.sleep(0.01)

    run(loop_factory, main)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_an_idempotent_request_dropped_unanswered_is_sent_again(loop_factory: Any) -> None:
    async def main() -> None:
        async with Server(answered=1, drop_next=True) as server:
            client = HttpClient("127.0.0.1", server.port, size=4)
            try:
                assert (await client.request("POST", "/x", b"a"))[0] == 200
                status, _, body = await client.request("POST", "/x", b"b", idempotent=True)
                assert (status, body) == (200, b"b")
            finally:
                client.close()
            assert client.retries == 1
            assert server.connections == 2
            assert server.requests == 3  # a, b dropped, b again
            await asyncio.sleep(0.01)

    run(loop_factory, main)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_a_non_idempotent_request_dropped_unanswered_is_not_sent_again(
    loop_factory: Any,
) -> None:
    async def main() -> None:
        async with Server(answered=1, drop_next=True) as server:
            client = HttpClient("127.0.0.1", server.port, size=4)
            try:
                assert (await client.request("POST", "/x", b"a"))[0] == 200
                with pytest.raises(ConnectionError):
                    await client.request("POST", "/x", b"b")
                # The pool is still usable.
                assert (await client.request("POST", "/x", b"c"))[0] == 200
            finally:
                client.close()
            assert client.retries == 0
            assert server.requests == 3
            await asyncio.sleep(0.01)

    run(loop_factory, main)


@pytest.mark.parametrize("loop_factory", LOOPS)
def test_idle_connections_older_than_max_idle_are_not_reused(loop_factory: Any) -> None:
    async def main() -> None:
        async with Server(answered=5, drop_next=False) as server:
            client = HttpClient("127.0.0.1", server.port, size=4, max_idle=0.0)
            try:
                for _ in range(2):
                    assert (await client.request("POST", "/x", b"a"))[0] == 200
                    await asyncio.sleep(0.002)
            finally:
                client.close()
            assert server.connections == 2
            assert client.stale == 1
            await asyncio.sleep(0.01)

    run(loop_factory, main)
