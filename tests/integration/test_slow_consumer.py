"""A browser that stops reading cannot grow server memory; it is told ``gone``.

The client opens its stream with a 4 KiB receive buffer and stops reading
while the page publishes ~20 MB (5,000 messages of 4 KB) with no flow
control. The server's write blocks after what the socket buffers hold; the
outbox must stay within ``ATHENA_OUTBOX_SIZE`` the whole time, and once the
client reads again it gets consecutive messages and then an explicit
``gone`` (``outbox-trimmed``), never a silent jump.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.servers import page_state
from tests.protocol_client import ProtocolClient, SmallBufferAdapter
from tests.support import wait_until

pytestmark = pytest.mark.integration

OUTBOX_SIZE = 50
COUNT = 5_000
PAD = 4_000


def test_slow_consumer_keeps_outbox_bounded_and_gets_gone_not_a_gap(server_factory: Any) -> None:
    server = server_factory(heartbeat=0.5, outbox_size=OUTBOX_SIZE, page_timeout=30)
    with ProtocolClient(server.url).open() as client:
        client.session.mount("http://", SmallBufferAdapter(rcvbuf=4096))
        probe = client.widget("first")
        stream = client.stream(read_timeout=10)
        try:
            wait_until(lambda: page_state(server.url, client.page_id)["stream_attached"], timeout=5)
            status, body = client.post_raw(
                {
                    "messages": [
                        {
                            "seq": 1,
                            "type": "call",
                            "widget": probe,
                            "method": "push",
                            "args": [COUNT],
                            "kwargs": {"pad": PAD},
                        }
                    ]
                }
            )
            assert (status, body) == (200, {"results": [{"seq": 1, "ok": True}]})

            samples: list[dict[str, Any]] = []

            def pushed_all() -> bool:
                samples.append(page_state(server.url, client.page_id))
                return samples[-1]["probes"][str(probe)]["pushed"] == COUNT

            # The publisher is never held up by the stuck reader.
            wait_until(pushed_all, timeout=30, interval=0.01)
            for state in samples:
                assert state["outbox_len"] <= OUTBOX_SIZE
                assert state["outbox_bytes"] <= OUTBOX_SIZE * (PAD + 200)
            final = samples[-1]
            assert final["last_seq"] == COUNT
            assert final["probes"][str(probe)]["max_outbox"] == OUTBOX_SIZE
            assert final["stream_attached"]  # still stuck in a blocked write

            # The reader wakes up: whatever reached it is complete and in
            # order, and then the stream says why it stops.
            events = stream.until_end(timeout=30, limit=COUNT + 100)
        finally:
            stream.close()

    messages = [e for e in events if e.event == "message"]
    assert messages, "the client got nothing before gone"
    assert [int(e.id) for e in messages] == list(range(1, len(messages) + 1))
    assert [e.json()["args"][0] for e in messages] == list(range(len(messages)))
    assert len(messages) < COUNT - OUTBOX_SIZE  # the rest was dropped, and...
    assert events[-1].event == "gone"  # ...said so
    assert events[-1].json() == {"reason": "outbox-trimmed"}
    assert stream.error is None  # the server ended the stream itself


def test_slow_consumer_reconnecting_after_trim_gets_gone(server_factory: Any) -> None:
    server = server_factory(heartbeat=0.5, outbox_size=OUTBOX_SIZE)
    with ProtocolClient(server.url).open() as client:
        probe = client.widget("first")
        status, _ = client.post_raw(
            {
                "messages": [
                    {
                        "seq": 1,
                        "type": "call",
                        "widget": probe,
                        "method": "publish",
                        "args": [OUTBOX_SIZE * 4],
                    }
                ]
            }
        )
        assert status == 200
        state = page_state(server.url, client.page_id)
        assert (state["outbox_len"], state["last_seq"]) == (OUTBOX_SIZE, OUTBOX_SIZE * 4)
        with client.stream(last_event_id=0) as stream:
            events = stream.until_end(timeout=5)
        assert [(e.event, e.json()) for e in events] == [("gone", {"reason": "outbox-trimmed"})]
