"""Hypothesis over all of Unicode in Redis mode, against real Redis (issue 13).

``tests/unit/test_fuzz_unicode.py`` storms the in-memory broker in process;
this is the same storm through real sockets: ``tests.apps.redis_app:app``
under ``gunicorn -k gevent -w 2`` sharing a private ``redis-server``, so the
strings cross the Redis broker's loops (writer, subscriber, poller, inbox)
on their way, and each request lands on whichever worker accepts it (a POST
for a page the other worker owns is forwarded; a stream of it read from
Redis). Strings are drawn from every code point, lone UTF-16 surrogates and
non-characters included, and sent as a browser's ``JSON.stringify`` sends
them (surrogates as ``\\u`` escapes).

Always: no 5xx, every error answer JSON, every frame read valid UTF-8 with
ids 1, 2, 3... per page (or an explicit ``gone``). After the storm, no
traceback in the server's log and every loop of both workers alive, never
restarted.
"""

from __future__ import annotations

import codecs
import html
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from flask_athena.sse import SSEParser
from tests.integration.redis_support import RedisServer, connection, redis_server
from tests.integration.test_hostile import _META
from tests.integration.test_redis_loops import loops_of_every_worker
from tests.support import LiveServer
from tests.unit.test_fuzz_unicode import any_text, json_like

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module

#: Seconds between heartbeats: a stream read ends at the first one (caught up).
HEARTBEAT = 0.3


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[LiveServer]:
    env = {
        "ATHENA_BROKER_URL": redis_server.url,
        "ATHENA_HEARTBEAT": str(HEARTBEAT),
        "ATHENA_PAGE_TIMEOUT": "120",
        "ATHENA_OUTBOX_SIZE": "64",
        "ATHENA_MAX_PAGES_PER_SESSION": "4",
        "SECRET_KEY": "fuzz-redis",
    }
    server = LiveServer("tests.apps.redis_app:app", "fuzz-redis", workers=2, env=env)
    server.start()
    yield server
    server.stop()


class WirePage:
    """One page as a browser holds it: config, cookies, seqs, the last id read."""

    def __init__(self, base: str, cookies: requests.cookies.RequestsCookieJar) -> None:
        self.base = base
        self.cookies = cookies
        session, _ = connection(base, cookies)  # a fresh connection: either worker
        with session:
            response = session.get(base + "/", timeout=30)
            assert response.status_code == 200, response.text
            cookies.update(session.cookies)
        match = _META.search(response.text)
        assert match is not None
        self.config: dict[str, Any] = json.loads(html.unescape(match.group(1)))
        self.seq = 0
        self.last = 0
        self.gone: str | None = None

    def post(self, endpoint: str, body: Any) -> requests.Response:
        # ensure_ascii: a lone surrogate goes as "\ud800", as JSON.stringify sends it.
        session, _ = connection(self.base, self.cookies)
        with session:
            response = session.post(
                self.base + self.config[endpoint],
                data=json.dumps(body, ensure_ascii=True),
                headers={
                    "Content-Type": "application/json",
                    "Origin": self.base,
                    "X-Athena-Token": self.config["token"],
                },
                timeout=30,
            )
        assert response.status_code < 500, (response.status_code, response.text)
        if response.content:
            response.json()  # every answer with a body is JSON
        return response

    def call(self, method: str, args: list[Any]) -> requests.Response:
        self.seq += 1
        message = {"seq": self.seq, "type": "call", "widget": 1, "method": method}
        response = self.post("calls", {"messages": [{**message, "args": args, "kwargs": {}}]})
        if response.status_code != 200 and "results" not in response.json():
            # The whole batch was refused (a bad message): its seq was never
            # taken, so the browser's next message reuses it.
            self.seq -= 1
        return response

    def read(self) -> None:
        """Reconnect with Last-Event-ID and read until caught up (a heartbeat) or gone.

        Every byte must be valid UTF-8 and every id the previous one + 1.
        """
        session, _ = connection(self.base, self.cookies)
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        parser = SSEParser()
        deadline = time.monotonic() + 30
        with session:
            response = session.get(
                self.base + self.config["events"],
                headers={"Last-Event-ID": str(self.last)},
                stream=True,
                timeout=(5, 5),
            )
            assert response.status_code < 500, response.status_code
            if response.status_code != 200:
                response.json()  # refused (evicted page, limit): a JSON error
                self.gone = f"status {response.status_code}"
                return
            for chunk in response.iter_content(None):
                decoder.decode(chunk)  # raises on anything that is not UTF-8
                for event in parser.feed(chunk):
                    if event.event == "gone":
                        self.gone = str(event.json()["reason"])  # type: ignore[index]
                        return
                    if event.event == "heartbeat":
                        return
                    if event.id is not None:
                        assert int(event.id) == self.last + 1, (event.id, self.last)
                        self.last = int(event.id)
                        event.json()
                assert time.monotonic() < deadline, "the stream never caught up"


class RedisUnicodeStorm(RuleBasedStateMachine):
    """Pages of two sessions opened, called, read, reconnected and closed in any order."""

    base = ""

    def __init__(self) -> None:
        super().__init__()
        self.jars = [requests.cookies.RequestsCookieJar() for _ in range(2)]
        self.pages: list[WirePage] = []

    def teardown(self) -> None:
        for page in self.pages:
            page.post("close", {"token": page.config["token"]})

    @precondition(lambda self: len(self.pages) < 5)
    @rule(which=st.integers(0, 1))
    def open_page(self, which: int) -> None:
        page = WirePage(self.base, self.jars[which])
        page.read()  # the stream attaches: the page joins the room
        self.pages.append(page)

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 4), text=any_text, method=st.sampled_from(["shout", "ping_back"]))
    def call(self, n: int, text: str, method: str) -> None:
        # Through a broadcast (every worker delivers it) or a server call to
        # this page only: either way the owner's writer puts it in Redis.
        response = self.pages[n % len(self.pages)].call(method, [text])
        assert response.status_code in (200, 404), response.text  # 404: evicted

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 4), args=st.lists(json_like, max_size=3), method=any_text)
    def call_anything(self, n: int, args: list[Any], method: str) -> None:
        # Unknown methods, arguments that do not bind: 4xx or an error result.
        self.pages[n % len(self.pages)].call(method, args)

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 4))
    def reconnect(self, n: int) -> None:
        page = self.pages[n % len(self.pages)]
        page.read()
        if page.gone is not None:
            # Evicted by the session limit, or trimmed past what it read:
            # an explicit end, as the browser would be told (then reloads).
            self.pages.remove(page)

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 4))
    def close(self, n: int) -> None:
        page = self.pages.pop(n % len(self.pages))
        assert page.post("close", {"token": page.config["token"]}).status_code == 204


@pytest.mark.timeout(300)
def test_unicode_storm_in_redis_mode_leaves_every_loop_alive(server: LiveServer) -> None:
    start = server.log_path.stat().st_size
    RedisUnicodeStorm.base = server.url
    RedisUnicodeStorm.TestCase.settings = settings(
        max_examples=8,
        stateful_step_count=20,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    RedisUnicodeStorm.TestCase().runTest()
    loops = loops_of_every_worker(server.url)
    assert len(loops) == 2
    for pid, health in loops.items():
        assert {loop["name"] for loop in health} == {
            "heartbeat",
            "subscriber",
            "inbox",
            "writer",
            "poller",
        }, pid
        for loop in health:
            # Alive, never restarted, and no item refused either: every
            # string was made valid before it reached a loop.
            assert loop["alive"] and loop["restarts"] == 0, (pid, loop)
            assert loop["failed_items"] == 0, (pid, loop)
    with open(server.log_path, "rb") as log:
        log.seek(start)
        text = log.read().decode("utf-8", "replace")
    assert "Traceback" not in text, text
