"""Replay after reconnect, and the explicit ``gone`` when replay is impossible.

What the browser missed while its stream was down comes back on reconnect
(``Last-Event-ID`` or ``?last=``). When it cannot — the outbox was trimmed
past the browser's last id, or the server restarted and lost the page — the
stream says ``gone`` and POSTs say ``page-not-found``: never a silent gap.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocol_client import CallError, ProtocolClient
from tests.support import wait_until

pytestmark = pytest.mark.integration


def publish(client: ProtocolClient, seq: int, count: int, start: int = 0) -> int:
    """Publish ``count`` ``take`` calls through a raw POST; return the last event id."""
    status, body = client.post_raw(
        {
            "messages": [
                {
                    "seq": seq,
                    "type": "call",
                    "widget": client.widget("first"),
                    "method": "publish",
                    "args": [count],
                    "kwargs": {"start": start},
                }
            ]
        }
    )
    assert status == 200, body
    return int(body["results"][0]["ok"])


def takes(events: list[Any]) -> list[tuple[int, int]]:
    return [(int(e.id), e.json()["args"][0]) for e in events]


def test_messages_sent_while_stream_is_down_arrive_on_reconnect(server_factory: Any) -> None:
    server = server_factory(heartbeat=0.2, outbox_size=100)
    with ProtocolClient(server.url).open() as client:
        assert publish(client, 1, 5) == 5
        with client.stream() as stream:
            assert takes(stream.events(5, timeout=5)) == [(n + 1, n) for n in range(5)]

        # Stream down: these wait in the outbox.
        assert publish(client, 2, 7, start=5) == 12
        with client.stream(last_event_id=5) as stream:  # Last-Event-ID header
            assert takes(stream.events(7, timeout=5)) == [(n + 1, n) for n in range(5, 12)]
            publish(client, 3, 1, start=12)  # and the stream goes on live
            assert takes(stream.events(1, timeout=5)) == [(13, 12)]

        assert publish(client, 4, 3, start=13) == 16
        with client.stream(last_event_id=13, use_query=True) as stream:  # ?last=
            assert takes(stream.events(3, timeout=5)) == [(14, 13), (15, 14), (16, 15)]
            # Nothing else: no repeat of what was acknowledged.
            event = stream.next_event(timeout=5)
            assert event is not None and event.event == "heartbeat"


def test_stream_cut_mid_message_replays_that_message_whole_once(
    server_factory: Any, proxy_factory: Any
) -> None:
    server = server_factory(heartbeat=0.2, outbox_size=100)
    proxy = proxy_factory(server.port)
    with ProtocolClient(proxy.url).open() as client:
        taken: list[int] = []
        client.handlers["take"] = lambda widget, n: taken.append(n)
        client.connect()
        probe = client.widget("first")
        client.call_value(probe, "publish", 10)
        wait_until(lambda: len(taken) == 10, timeout=5)
        connects = client.stats.stream_connects

        # The next bytes the server sends are cut inside the message.
        assert proxy.cut_streams("mid") == 1
        client.call_value(probe, "publish", 1, start=10)
        wait_until(lambda: len(taken) == 11, timeout=5)
        assert proxy.stats.cut_connections.get("mid") == 1
        assert client.stats.stream_connects > connects
        assert taken == list(range(11))
        assert [seq for seq, _ in client.messages] == list(range(1, 12))
        assert client.stats.gaps == []


def test_replay_past_outbox_bound_says_gone_outbox_trimmed(server_factory: Any) -> None:
    server = server_factory(heartbeat=0.2, outbox_size=10)
    with ProtocolClient(server.url).open() as client:
        publish(client, 1, 2)
        with client.stream() as stream:
            assert takes(stream.events(2, timeout=5)) == [(1, 0), (2, 1)]
        # More than the outbox holds while the browser is away.
        assert publish(client, 2, 25, start=2) == 27
        for last, use_query in ((2, False), (2, True)):
            with client.stream(last_event_id=last, use_query=use_query) as stream:
                events = stream.until_end(timeout=5)
            # Not one message of the 25: the browser must reload, not skip ahead.
            assert [(e.event, e.id, e.json()) for e in events] == [
                ("gone", None, {"reason": "outbox-trimmed"})
            ]


def test_server_restart_makes_page_unknown_explicitly(server_factory: Any) -> None:
    server = server_factory(heartbeat=0.2)
    with ProtocolClient(server.url).open() as client:
        client.connect()
        probe = client.widget("first")
        assert client.call_value(probe, "tick") == 1
        wait_until(lambda: client.stats.heartbeats > 0, timeout=5)

        server.stop()
        restarted = server_factory(port=server.port, heartbeat=0.2)
        assert restarted.url == server.url
        # The client's own reconnect loop finds the page unknown and stops.
        assert client.gone_event.wait(15)
        assert client.gone == "unknown-page"
        with pytest.raises(CallError) as failure:
            client.call_value(probe, "tick")
        assert (failure.value.status, failure.value.code) == (404, "page-not-found")
        with client.stream(last_event_id=client.last_event_id) as stream:
            events = stream.until_end(timeout=5)
        assert [(e.event, e.json()) for e in events] == [("gone", {"reason": "unknown-page"})]
