"""A POST whose response is lost is retried, and the server never runs it twice.

The proxy forwards the request, lets the server answer, and swallows the
answer; the client sends the same seqs again and must get the original
result from the server's record.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from tests.integration.servers import page_state
from tests.protocol_client import ProtocolClient
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(server_factory: Any, client_factory: Any, proxy_factory: Any) -> Any:
    server = server_factory(heartbeat=0.5)
    proxy = proxy_factory(server.port)
    client: ProtocolClient = client_factory(proxy.url)
    return server, proxy, client


def probe_state(server_url: str, client: ProtocolClient, widget: int) -> dict[str, Any]:
    return dict(page_state(server_url, client.page_id)["probes"][str(widget)])


def test_lost_post_response_retry_gets_original_result_and_runs_once(setup: Any) -> None:
    server, proxy, client = setup
    probe = client.widget("first")
    body = json.dumps(
        {"messages": [{"seq": 1, "type": "call", "widget": probe, "method": "tick", "args": []}]}
    )
    proxy.drop_response(b'"tick"')
    with pytest.raises(requests.ConnectionError):
        client.post_raw(body)
    assert proxy.stats.dropped_responses == 1
    # The server did run it: the answer was lost, not the call.
    assert probe_state(server.url, client, probe)["ticks"] == 1

    status, reply = client.post_raw(body)  # the very same batch, same seq
    assert (status, reply) == (200, {"results": [{"seq": 1, "ok": 1}]})
    assert probe_state(server.url, client, probe)["ticks"] == 1

    # The next seq runs normally.
    status, reply = client.post_raw(
        {"messages": [{"seq": 2, "type": "call", "widget": probe, "method": "tick", "args": []}]}
    )
    assert reply == {"results": [{"seq": 2, "ok": 2}]}


def test_client_lane_retries_lost_batch_with_same_seqs(setup: Any) -> None:
    server, proxy, client = setup
    probe = client.widget("second")
    client.connect(stream=False)
    proxy.drop_response(b'"record"')
    futures = [client.call(probe, "record", n) for n in range(5)]
    values = [f.result(timeout=15).value() for f in futures]
    assert values == [1, 2, 3, 4, 5]  # the original answers: each ran once
    assert proxy.stats.dropped_responses == 1
    assert client.stats.call_retries >= 1
    assert client.call_value(probe, "recorded_numbers") == [0, 1, 2, 3, 4]


def test_retry_arriving_while_first_attempt_still_runs_waits_for_it(setup: Any) -> None:
    server, proxy, client = setup
    probe = client.widget("first")
    client.connect(stream=False)
    future = client.call(probe, "slow_tick", 1.0)
    # Cut the POST while the server is inside slow_tick: the client cannot
    # know whether it ran, so it sends the same seq again, which must wait
    # for the running call instead of starting a second one.
    wait_until(lambda: probe_state(server.url, client, probe)["running"] == 1, timeout=5)
    assert proxy.cut_in_flight("reset") == 1
    assert future.result(timeout=15).value() == 1
    assert client.stats.call_retries == 1
    state = probe_state(server.url, client, probe)
    assert (state["ticks"], state["running"]) == (1, 0)
