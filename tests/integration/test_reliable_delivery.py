"""Issue 5: exactly once and in order, both directions, while connections break.

10,000 server → browser calls and 10,000 browser → server calls go between
the protocol client and one page, through a proxy that keeps cutting,
resetting and stalling connections. Every single message is checked: none
lost, none twice, none out of order.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

import pytest

from tests.faultproxy import FaultProxy
from tests.integration.servers import page_state
from tests.protocol_client import ProtocolClient, Reply
from tests.support import OUTPUT, wait_until

pytestmark = pytest.mark.integration

COUNT = 10_000
OUTBOX_SIZE = 2_000
#: The app's pusher waits while this many messages are unacknowledged, so
#: the outbox stays bounded by the client's acks, not by trimming.
HIGH_WATER = 500
SEED = int(os.environ.get("CHAOS_SEED", "20240605"))


class Chaos:
    """Breaks the proxy's connections every 100–300 ms until stopped (bounded)."""

    def __init__(self, proxy: FaultProxy, seed: int, max_faults: int = 400, limit: float = 45.0):
        self.proxy = proxy
        self.random = random.Random(seed)
        self.max_faults = max_faults
        self.limit = limit
        self.stop = threading.Event()
        self.log: dict[str, int] = {}
        self.connections_cut = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)

    def _faults(self) -> list[tuple[str, Callable[[], int]]]:
        proxy = self.proxy
        return [
            ("cut-all-fin", lambda: proxy.cut_all("close")),
            ("cut-all-rst", lambda: proxy.cut_all("reset")),
            ("cut-streams-mid-message", lambda: proxy.cut_streams("mid")),
            ("cut-streams-rst", lambda: proxy.cut_streams("reset")),
            ("cut-in-flight-rst", lambda: proxy.cut_in_flight("reset")),
            ("cut-in-flight-fin", lambda: proxy.cut_in_flight("close")),
            ("truncate-call-request", lambda: self._truncate(b'"record"')),
            ("drop-call-response", lambda: self._drop(b'"record"')),
            ("drop-results-response", lambda: self._drop(b'"ack"')),
            ("stall", self._stall),
        ]

    def _drop(self, marker: bytes) -> int:
        self.proxy.drop_response(marker)
        return 0

    def _truncate(self, marker: bytes) -> int:
        self.proxy.truncate_request(marker)
        return 0

    def _stall(self) -> int:
        self.proxy.stall()
        # Longer than the client's heartbeat timeout now and then, so the
        # client also has to notice a silent (not closed) stream.
        self.stop.wait(self.random.uniform(0.1, 0.7))
        self.proxy.resume()
        return 0

    def _run(self) -> None:
        faults = self._faults()
        deadline = time.monotonic() + self.limit
        try:
            for _ in range(self.max_faults):
                if self.stop.wait(self.random.uniform(0.1, 0.3)) or time.monotonic() > deadline:
                    return
                name, fault = self.random.choice(faults)
                self.connections_cut += fault()
                self.log[name] = self.log.get(name, 0) + 1
        except BaseException as exc:  # reported by finish(); a thread must not die silently
            self.error = exc

    def start(self) -> Chaos:
        self._thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error
        self.proxy.resume()


def test_ten_thousand_each_way_exactly_once_in_order_through_cuts(
    server_factory: Any, client_factory: Any, proxy_factory: Any
) -> None:
    server = server_factory(
        heartbeat=0.2, page_timeout=15, outbox_size=OUTBOX_SIZE, call_timeout=30
    )
    proxy = proxy_factory(server.port)
    client: ProtocolClient = client_factory(
        proxy.url,
        batch_size=20,
        batch_pause=0.01,
        ack_every=100,
        ack_interval=0.05,
        post_timeout=5.0,
    )
    taken: list[int] = []
    client.handlers["take"] = lambda widget, n: taken.append(n)
    pusher, recorder = client.widget("first"), client.widget("second")
    client.connect()

    started = time.monotonic()
    chaos = Chaos(proxy, SEED).start()
    try:
        # Both directions at about 1,000 messages a second, so the faults
        # land all along the run rather than after a burst.
        assert client.call_value(
            pusher, "push", COUNT, high_water=HIGH_WATER, yield_every=10, pause=0.01
        )
        replies: list[Future[Reply]] = [client.call(recorder, "record", n) for n in range(COUNT)]
        wait_until(lambda: all(f.done() for f in replies), timeout=50, interval=0.05)
        wait_until(lambda: len(taken) >= COUNT, timeout=50, interval=0.05)
    finally:
        chaos.finish()
        write_summary(time.monotonic() - started, chaos, proxy, client)

    # Browser → server: each call ran once, in order (record() answers how
    # many numbers it holds, so call n must answer n + 1) ...
    values = [f.result(timeout=0).value() for f in replies]
    assert values == list(range(1, COUNT + 1))
    # ... and the element holds exactly 0..9999, in order.
    assert client.call_value(recorder, "recorded_numbers") == list(range(COUNT))

    # Server → browser: every event id once, consecutively, and the payloads
    # exactly 0..9999 in order.
    assert client.gone is None
    assert client.stats.gaps == []
    assert [seq for seq, _ in client.messages] == list(range(1, COUNT + 1))
    assert taken == list(range(COUNT))
    assert client.stats.unexpected_replies == []

    # The outbox never held more than the pusher's high-water mark (far
    # below ATHENA_OUTBOX_SIZE: nothing was ever trimmed), and once the
    # client has acked and answered everything it is empty.
    def drained() -> bool:
        state = page_state(server.url, client.page_id)
        return state["outbox_len"] == 0 and state["pending"] == 0

    wait_until(drained, timeout=10)
    state = page_state(server.url, client.page_id)
    assert state["last_seq"] == COUNT
    assert state["probes"][str(pusher)]["pushed"] == COUNT
    assert state["probes"][str(pusher)]["max_outbox"] <= HIGH_WATER

    # The run must really have gone through faults, or it proves nothing.
    assert client.stats.stream_connects > 10
    assert client.stats.call_retries > 0
    assert client.stats.result_retries > 0 or proxy.stats.dropped_responses > 0
    assert proxy.stats.cut_connections.get("mid", 0) > 0


def write_summary(seconds: float, chaos: Chaos, proxy: FaultProxy, client: ProtocolClient) -> None:
    """What the run went through, in test-output/reliable-delivery.json (and stdout)."""
    stats = client.stats
    summary = {
        "seed": SEED,
        "seconds": round(seconds, 2),
        "faults": chaos.log,
        "connections_cut_by_faults": chaos.connections_cut,
        "proxy": {
            "connections": proxy.stats.connections,
            "cut_connections": proxy.stats.cut_connections,
            "dropped_responses": proxy.stats.dropped_responses,
        },
        "client": {
            "messages_received": len(client.messages),
            "stream_connects": stats.stream_connects,
            "stream_failures": stats.stream_failures,
            "duplicates_dropped": stats.duplicates_dropped,
            "gaps": len(stats.gaps),
            "call_posts": stats.call_posts,
            "call_retries": stats.call_retries,
            "result_posts": stats.result_posts,
            "result_retries": stats.result_retries,
            "results_sent": stats.results_sent,
        },
    }
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "reliable-delivery.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
