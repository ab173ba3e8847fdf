"""Helpers of the Redis scale-out tests: a Redis server, pages, calls and streams
that land on chosen gunicorn workers.

Every HTTP request here goes over a fresh TCP connection, so the kernel hands
it to whichever worker accepts first; ``/whoami`` on the same connection tells
which worker that was. Every process is stopped by its PID; every wait has a
deadline.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests
from requests.adapters import BaseAdapter

from tests.protocol_client import SSEParser
from tests.support import OUTPUT, free_port, wait_until

#: The text :func:`in_room` broadcasts (left out of ``Stream.heard()``).
SYNC = "__sync__"
_META = re.compile(r'<meta name="athena-config" content="([^"]*)">')
_PID = re.compile(r'data-pid="(\d+)"')


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, no persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = OUTPUT / "logs" / f"redis-{self.port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        client = self.client()
        wait_until(lambda: _pings(client), timeout=10, interval=0.05)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def keys(self, pattern: str = "athena:*") -> list[str]:
        return sorted(self.client().scan_iter(match=pattern))

    def page_keys(self, pages: list[Page]) -> list[str]:
        """The keys ``pages`` still have in Redis (other tests' pages may live on)."""
        client = self.client()
        return [
            key
            for page in pages
            for key in (f"athena:page:{page.id}", f"athena:out:{page.id}")
            if client.exists(key)
        ]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


def connection(
    base: str, cookies: Any = None, adapter: Callable[[], BaseAdapter] | None = None
) -> tuple[requests.Session, int]:
    """A session on a new TCP connection (made by ``adapter()`` if given),
    and the pid of the worker holding it."""
    session = requests.Session()
    if adapter is not None:
        session.mount("http://", adapter())
    if cookies is not None:
        session.cookies.update(cookies)
    # 0 when the app has no /whoami (the example app): the pid is then unknown.
    text = session.get(base + "/whoami", timeout=30).text
    return session, int(text) if text.isdigit() else 0


def connection_to(
    base: str,
    cookies: Any,
    pick: Callable[[int], bool],
    timeout: float = 90.0,
    adapter: Callable[[], BaseAdapter] | None = None,
) -> tuple[requests.Session, int]:
    """A connection held by a worker ``pick`` accepts.

    Connections are opened several at once: an idle kernel often hands
    one-by-one connections to the same worker, concurrent ones spread. Rounds
    go on until ``timeout``: a worker still booting on a loaded machine
    accepts nothing for a while.
    """
    session, pid = connection(base, cookies, adapter)
    if pick(pid):
        return session, pid
    session.close()
    deadline = time.monotonic() + timeout
    with ThreadPoolExecutor(8) as pool:
        while time.monotonic() < deadline:
            opened = list(pool.map(lambda _: connection(base, cookies, adapter), range(8)))
            chosen = next(((s, pid) for s, pid in opened if pick(pid)), None)
            for session, _pid in opened:
                if chosen is None or session is not chosen[0]:
                    session.close()
            if chosen is not None:
                return chosen
            time.sleep(0.1)
    raise AssertionError("never landed on the worker wanted")


class Page:
    """One rendered page: its config, cookie and the pid of its owner worker."""

    def __init__(
        self,
        base: str,
        path: str = "/",
        cookies: Any = None,
        pick: Callable[[int], bool] | None = None,
    ) -> None:
        """Render ``path`` in the session of ``cookies`` (a new one if none),
        on a worker ``pick`` accepts (any if none)."""
        self.base = base
        if pick is None:
            session, _ = connection(base, cookies)
        else:
            session, _ = connection_to(base, cookies, pick)
        with session:
            response = session.get(base + path, timeout=30)
            response.raise_for_status()
        self.cookies = session.cookies
        match = _META.search(response.text)
        assert match is not None
        self.config: dict[str, Any] = json.loads(html.unescape(match.group(1)))
        pid = _PID.search(response.text)
        self.owner = int(pid.group(1)) if pid else 0
        self.seq = 0

    @property
    def id(self) -> str:
        return str(self.config["page"])

    def post(
        self,
        messages: list[dict[str, Any]],
        base: str | None = None,
        avoid: int | None = None,
        want: int | None = None,
    ) -> tuple[int, int, Any]:
        """POST a batch; return ``(pid that took it, status, body)``.

        ``avoid``/``want``: retry on new connections until the worker holding
        the connection is not/is that pid.
        """
        base = base or self.base
        session, pid = connection_to(
            base,
            self.cookies,
            lambda pid: (avoid is None or pid != avoid) and (want is None or pid == want),
        )
        try:
            response = session.post(
                base + self.config["calls"],
                data=json.dumps({"messages": messages}),
                headers={
                    "Content-Type": "application/json",
                    "Origin": base,
                    "X-Athena-Token": self.config["token"],
                },
                timeout=30,
            )
            self.cookies.update(response.cookies)
            body = response.json() if response.content else None
            return pid, response.status_code, body
        finally:
            session.close()

    def next_call(self, method: str, *args: Any) -> list[dict[str, Any]]:
        """A batch of one call of ``method`` on widget 1, with the next seq."""
        self.seq += 1
        return [
            {
                "seq": self.seq,
                "type": "call",
                "widget": 1,
                "method": method,
                "args": list(args),
                "kwargs": {},
            }
        ]

    def call(self, method: str, *args: Any, **options: Any) -> tuple[int, Any]:
        """Call ``method`` of widget 1; return ``(pid that took the POST, value)``."""
        pid, status, body = self.post(self.next_call(method, *args), **options)
        assert status == 200, body
        (result,) = body["results"]
        assert "ok" in result, result
        return pid, result["ok"]

    def close(self, base: str | None = None) -> int:
        base = base or self.base
        session, _ = connection(base, self.cookies)
        with session:
            return session.post(
                base + self.config["close"],
                data=json.dumps({"token": self.config["token"]}),
                headers={"Content-Type": "application/json", "Origin": base},
                timeout=10,
            ).status_code


def pages_on_workers(base: str, owners: int, cookies: Any = None) -> list[Page]:
    """One page on each of ``owners`` different workers, each rendered on a
    worker that owns none of them yet (in the session of ``cookies``, or each
    in a new one)."""
    pages: list[Page] = []
    while len(pages) < owners:
        taken = {page.owner for page in pages}
        pages.append(Page(base, cookies=cookies, pick=lambda pid, taken=taken: pid not in taken))
    return pages


class Stream(threading.Thread):
    """Reads a page's event stream, reconnecting with Last-Event-ID until ``gone``."""

    def __init__(
        self,
        page: Page,
        base: str | None = None,
        avoid: int | None = None,
        want: int | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.page = page
        self.base = base or page.base
        self.avoid = avoid
        #: Worker wanted for the first connection only (reconnects go anywhere else).
        self.want = want
        self.messages: list[tuple[int, Any]] = []
        self.gone: str | None = None
        self.served_by: list[int] = []
        self.stopping = False
        self.last = 0
        self.status: int | None = None
        #: Heartbeat events received (over every connection).
        self.heartbeats = 0

    def run(self) -> None:
        while not self.stopping and self.gone is None:
            try:
                self._read_once()
            except (requests.RequestException, OSError, ValueError):
                time.sleep(0.1)

    def _read_once(self) -> None:
        want, self.want = self.want, None
        session, pid = connection_to(
            self.base,
            self.page.cookies,
            lambda pid: (self.avoid is None or pid != self.avoid) and (want is None or pid == want),
        )
        with session:
            response = session.get(
                self.base + self.page.config["events"],
                headers={"Last-Event-ID": str(self.last)},
                stream=True,
                timeout=(5, 5),
            )
            self.status = response.status_code
            if response.status_code == 503:
                # A worker still (re)connecting to Redis: a browser's stream
                # retries after a backoff, and so does this one.
                time.sleep(0.2)
                return
            self.served_by.append(pid)
            if response.status_code != 200:
                self.stopping = True
                return
            parser = SSEParser()
            for chunk in response.iter_content(None):
                for event in parser.feed(chunk):
                    if event.event == "gone":
                        self.gone = event.json()["reason"]
                        return
                    if event.event == "heartbeat":
                        self.heartbeats += 1
                    if event.id is not None:
                        seq = int(event.id)
                        assert seq == self.last + 1, (seq, self.last)
                        self.last = seq
                        self.messages.append((seq, event.json()))
                if self.stopping:
                    return

    def heard(self) -> list[Any]:
        """Arguments of the ``hear`` broadcasts received (without :func:`in_room`'s)."""
        return [
            m["args"]
            for _, m in self.messages
            if m.get("method") == "hear" and m["args"][1:] != [SYNC]
        ]

    def synced(self) -> bool:
        return any(m.get("method") == "hear" and m["args"][1:] == [SYNC] for _, m in self.messages)

    def stop(self) -> None:
        self.stopping = True
        self.join(timeout=10)


def in_room(page: Page, streams: list[Stream], timeout: float = 30.0) -> None:
    """Wait until every stream's page joined the room (its ``connected()`` ran).

    The pages join on their owner when their stream attaches, which the test
    cannot see: broadcast :data:`SYNC` from ``page`` until every stream heard one.
    """
    deadline = time.monotonic() + timeout
    while not all(s.synced() for s in streams):
        assert time.monotonic() < deadline, "the pages never joined the room"
        page.call("shout", SYNC)
        try:
            wait_until(lambda: all(s.synced() for s in streams), timeout=1.0)
        except AssertionError:
            pass
