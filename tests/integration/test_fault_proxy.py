"""The fault proxy really breaks streams the way the reliability tests claim.

A guarantee proved through a proxy that never cut anything would prove
nothing, so each fault is checked on the wire from the client's side.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.protocol_client import ProtocolClient

pytestmark = pytest.mark.integration


def publish(client: ProtocolClient, seq: int, count: int) -> None:
    status, _ = client.post_raw(
        {
            "messages": [
                {
                    "seq": seq,
                    "type": "call",
                    "widget": client.widget("first"),
                    "method": "publish",
                    "args": [count],
                }
            ]
        }
    )
    assert status == 200


@pytest.fixture
def through_proxy(server_factory: Any, proxy_factory: Any) -> Any:
    server = server_factory(heartbeat=0.2, outbox_size=100)
    proxy = proxy_factory(server.port)
    with ProtocolClient(proxy.url).open() as client:
        yield proxy, client


def test_mid_message_cut_delivers_half_a_message_that_is_never_dispatched(
    through_proxy: Any,
) -> None:
    proxy, client = through_proxy
    with client.stream() as stream:
        assert stream.next_event(timeout=3) is not None  # a heartbeat: connected
        assert proxy.cut_streams("mid") == 1
        publish(client, 1, 1)
        rest = stream.until_end(timeout=5)
        # Heartbeats pass; the message never completes, so it is not dispatched.
        assert [e.event for e in rest if e.event != "heartbeat"] == []
        assert stream.error is not None
    tail = bytes(stream.raw).rsplit(b"\n\n", 1)[-1]
    assert tail.startswith(b"id: 1\ndata: {")  # half of message 1 did arrive...
    assert not tail.endswith(b"}")  # ...cut inside its data line
    with client.stream(last_event_id=0) as stream:
        (event,) = stream.events(1, timeout=5)
    assert (event.id, event.json()["args"]) == ("1", [0])


def test_reset_cut_is_an_rst_for_the_client(through_proxy: Any) -> None:
    proxy, client = through_proxy
    with client.stream() as stream:
        assert stream.next_event(timeout=3) is not None
        assert proxy.cut_all("reset") == 1
        stream.until_end(timeout=5)
    assert stream.error is not None
    assert "reset" in repr(stream.error).lower()


def test_stall_holds_bytes_until_resume(through_proxy: Any) -> None:
    proxy, client = through_proxy
    with client.stream(read_timeout=0.6) as stream:
        assert stream.next_event(timeout=3) is not None
        proxy.stall()
        try:
            # Heartbeats every 0.2 s, yet nothing gets through (one may have
            # been on its way already) until the client's read times out.
            assert len(stream.until_end(timeout=5)) <= 1
            assert isinstance(stream.error, requests.ConnectionError)
            assert "timed out" in str(stream.error)
        finally:
            proxy.resume()
