"""Closing a tab and losing the network, as the server and the proxy see it, in every engine.

* Closing a tab sends the close beacon: the server closes the page with the
  reason ``"closed"`` (the ``page_closed`` signal, read through the test app's
  ``/control/closed``) within seconds, on every close — not after
  ``ATHENA_PAGE_TIMEOUT`` (set to 10 minutes here, so only the beacon can do it).
* During an outage the event stream is reopened by athena.js's own backoff
  only: the fault proxy resets every connection as soon as its request line
  arrives (a network error, which an engine's native ``EventSource`` retry
  would react to) and counts the refused ``/events`` requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.engines import User
from tests.browser.helpers import get_json
from tests.browser.live import open_live, wait_for
from tests.faultproxy import FaultProxy
from tests.support import LiveServer

pytestmark = pytest.mark.browser

#: athena.js's reconnect policy (RETRY_STEPS_MS, RETRY_JITTER): the n-th retry
#: waits STEPS[min(n, len) - 1] seconds, ±JITTER.
RETRY_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0)
RETRY_JITTER = 0.3


def most_attempts(seconds: float) -> int:
    """How many reconnects the policy allows in ``seconds``: every wait at its shortest."""
    attempts, elapsed = 0, 0.0
    while True:
        elapsed += RETRY_STEPS[min(attempts, len(RETRY_STEPS) - 1)] * (1 - RETRY_JITTER)
        if elapsed > seconds:
            return attempts
        attempts += 1


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(BROWSER_APP, "lifecycle", heartbeat=2, page_timeout=600)
    yield server
    server.stop()


@pytest.fixture
def proxy(server: LiveServer) -> Iterator[FaultProxy]:
    with FaultProxy(server.port) as proxy:
        yield proxy


def test_closing_a_tab_closes_the_page_on_the_server_every_time(
    server: LiveServer, user: User
) -> None:
    closed_ids = []
    for _ in range(4):
        live = open_live(user, server.url + "/core")
        page_id = live.page_id
        live.close()
        closed_ids.append(page_id)
        # Within seconds: ATHENA_PAGE_TIMEOUT (10 minutes) cannot close it.
        wait_for(
            lambda: page_id in get_json(server.url + "/control/closed"),  # noqa: B023
            timeout=10,
            what=f"page {page_id} closed by its tab's beacon",
        )
    closed = get_json(server.url + "/control/closed")
    assert {page_id: closed[page_id] for page_id in closed_ids} == dict.fromkeys(
        closed_ids, "closed"
    )


def attempts_of(requests: list[tuple[float, str]]) -> list[int]:
    """The refused requests grouped into reconnect attempts: how many requests each.

    Firefox repeats a GET whose connection is reset before any answer up to
    ten times at once (its ``network.http.request.max-attempts``), below the
    page: one ``EventSource`` attempt reaches the proxy as a burst of
    requests within milliseconds. The policy's shortest wait is 175 ms, so
    requests under 100 ms apart belong to one attempt.
    """
    bursts: list[int] = []
    previous = -1.0
    for at, _ in requests:
        if bursts and at - previous < 0.1:
            bursts[-1] += 1
        else:
            bursts.append(1)
        previous = at
    return bursts


def test_reconnect_attempts_during_an_outage_follow_the_policy(
    server: LiveServer, proxy: FaultProxy, user: User
) -> None:
    live = open_live(user, proxy.url + "/core")
    outage = 5.0
    started = time.monotonic()
    assert proxy.start_outage() >= 1
    live.wait("document.documentElement.dataset.athenaStatus === 'disconnected'")
    time.sleep(max(0.0, started + outage - time.monotonic()))
    proxy.end_outage()
    lasted = time.monotonic() - started
    streams = [(at, line) for at, line in proxy.refused_requests() if "/events" in line]
    attempts = attempts_of(streams)
    live.wait_connected()
    # At least two retries (the first comes after 0.25 s ± 30 %), and no more
    # than the backoff allows: with the engine's own EventSource retry on top
    # of the policy, Chromium and WebKit made 9-10 attempts in 5 s.
    bound = most_attempts(lasted)
    assert 2 <= len(attempts) <= bound, (lasted, attempts)
    # Each attempt is one request, except for Firefox's own repeats (above).
    assert max(attempts) <= (10 if user.engine == "firefox" else 1), attempts
    assert live.status() == "connected"
    wait_for(lambda: get_json(f"{server.url}/control/{live.page_id}")["stream_attached"])
    assert not live.errors, live.errors
