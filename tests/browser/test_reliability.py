"""Exactly once and in order, both directions, across a real outage in Chromium.

Chromium's ``context.set_offline(True)`` fails new requests but leaves an
open ``EventSource`` alone (TESTING.md), so the outage is made of both: a
fault proxy (``tests/faultproxy.py``) between the browser and gunicorn cuts
every open connection, and offline mode fails every new one. While the
browser is cut off the server pushes numbered ``take(n)`` calls (the test
asks it to through a control route, straight to gunicorn) and the page sends
numbered ``record(n)`` calls, which wait in its queue. After the network
comes back every number must arrive exactly once, in order, on each side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.helpers import (
    LivePageHandle,
    expect,
    get_json,
    open_live,
    post_json,
    screenshot,
    wait_for,
)
from tests.faultproxy import FaultProxy
from tests.support import LiveServer

pytestmark = pytest.mark.browser

SINK = "Athena.widgets()[0]"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(BROWSER_APP, "relay", heartbeat=2)
    yield server
    server.stop()


@pytest.fixture
def proxy(server: LiveServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as proxy:
        yield proxy


class Relay:
    """Both ends of the relay page: the browser's Sink and the server's record."""

    def __init__(self, server: LiveServer, handle: LivePageHandle) -> None:
        self.server = server
        self.handle = handle
        self.control = f"{server.url}/control/{handle.page_id}"

    def push(self, start: int, count: int, pause: float = 0.0) -> None:
        """The server calls take(n) for n in start..start+count-1 (a greenlet, one per pause)."""
        post_json(f"{self.control}/push?start={start}&count={count}&pause={pause}")

    def send(self, numbers: range) -> None:
        """The browser calls record(n) for each n, without waiting between them."""
        self.handle.run(f"{SINK}.send(arg);", list(numbers))

    def taken(self) -> list[int]:
        taken: list[int] = self.handle.run(f"return {SINK}.taken;")
        return taken

    def answers(self) -> dict[str, Any]:
        answers: dict[str, Any] = self.handle.run(f"return Object.fromEntries({SINK}.answers);")
        return answers

    def received(self) -> list[int]:
        received: list[int] = get_json(f"{self.control}/received")
        return received

    def server_state(self) -> dict[str, Any]:
        state: dict[str, Any] = get_json(self.control)
        return state

    def wait_taken(self, count: int, timeout: float = 20_000) -> None:
        self.handle.page.wait_for_function(
            f"athena.{SINK}.taken.length >= {count}",
            timeout=timeout,
        )

    def wait_answered(self, count: int, timeout: float = 20_000) -> None:
        self.handle.page.wait_for_function(
            f"athena.{SINK}.answers.size >= {count}",
            timeout=timeout,
        )

    def check(self, upto: int) -> None:
        """Every number below ``upto`` arrived exactly once, in order, both ways."""
        self.wait_taken(upto)
        self.wait_answered(upto)
        wait_for(self.handle.page, lambda: len(self.received()) >= upto)
        expected = list(range(upto))
        assert self.taken() == expected, "server → browser: lost, repeated or reordered"
        assert self.received() == expected, "browser → server: lost, repeated or reordered"
        # Each call's promise resolved with its own answer (record returns n).
        assert self.answers() == {str(n): n for n in expected}


def test_outage_delivers_everything_exactly_once_in_order_both_ways(
    server: LiveServer, proxy: FaultProxy, context: Any
) -> None:
    failed: list[str] = []  # URL, and "record" for the calls lane's POSTs of record(n)
    context.on(
        "requestfailed",
        lambda request: failed.append(
            "record" if '"method":"record"' in (request.post_data or "") else request.url
        ),
    )
    relay = Relay(server, open_live(context, proxy.url + "/relay"))
    page = relay.handle.page
    banner = page.locator(".athena-banner")

    # Before the outage: 0..9 each way.
    relay.push(0, 10)
    relay.send(range(10))
    relay.check(10)

    # The outage: every connection through the proxy is cut, and no new one
    # can be made.
    context.set_offline(True)
    assert proxy.cut_all("close") >= 1
    cut_at = time.monotonic()
    page.wait_for_function("document.documentElement.dataset.athenaStatus === 'disconnected'")
    relay.push(10, 30, pause=0.02)  # the server keeps calling the browser...
    relay.send(range(10, 25))  # ... and the browser keeps calling the server
    relay.send(range(25, 40))
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("Connection lost")
    # Hold the outage until the browser has tried to send the queued calls
    # five times (backoff 0.25, 0.5, 1, 2 s: some seconds), has tried to
    # reopen the stream, and the server has published everything.
    wait_for(page, lambda: failed.count("record") >= 5, timeout=30)
    wait_for(page, lambda: sum("/events" in url for url in failed) >= 1, timeout=20)
    wait_for(page, lambda: relay.server_state()["last_seq"] >= 40, timeout=20)
    assert relay.server_state()["stream_attached"] is False
    assert relay.received() == list(range(10)), "a call got through while offline"
    assert relay.taken() == list(range(10)), "a message got through while offline"
    assert relay.handle.status() == "disconnected"
    screenshot(page, "relay_outage_banner")

    outage = time.monotonic() - cut_at
    # Back online: replay from the outbox, retry with the same seqs.
    context.set_offline(False)
    relay.check(40)
    expect(banner).to_be_hidden()
    assert relay.handle.status() == "connected"
    assert outage > 2, f"the outage lasted only {outage:.2f}s"

    # A second fault without offline mode: the stream is cut in the middle
    # of the next SSE message (#40) while both sides are busy.
    assert proxy.cut_streams("mid") == 1
    relay.push(40, 40, pause=0.005)
    relay.send(range(40, 80))
    relay.check(80)
    assert proxy.stats.cut_connections.get("mid", 0) == 1
    page.wait_for_function("document.documentElement.dataset.athenaStatus === 'connected'")
    screenshot(page, "relay_after_outage")
    # Cut and refused requests are logged by Chrome; nothing else may be.
    unexpected = [e for e in relay.handle.errors if "Failed to load resource: net::" not in e]
    assert not unexpected, unexpected
