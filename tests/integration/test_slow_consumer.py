"""A stream that cannot keep up is cut and resumes by replay; memory stays bounded.

The client opens its stream with a 4 KiB receive buffer and stops reading
while the page publishes large messages with no flow control, so the
server's write blocks. The server must cut that stream (a blocked write is
never noticed otherwise) while the client is still stuck, keep the outbox
within ``ATHENA_OUTBOX_SIZE`` the whole time, and then:

* within the outbox bound, the client reconnecting with ``Last-Event-ID``
  gets the rest by replay: every message once, in order, no ``gone``;
* past it, the reconnect gets an explicit ``gone`` (``outbox-trimmed``),
  never a silent jump.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.servers import page_state
from tests.protocol_client import EventStream, ProtocolClient, SmallBufferAdapter
from tests.support import wait_until

pytestmark = pytest.mark.integration

HEARTBEAT = 0.5


def first_call(client: ProtocolClient, method: str, *args: Any, **kwargs: Any) -> int:
    """Call ``method`` of the probe "first" as the page's first message (seq 1);
    return the probe's widget id."""
    probe = client.widget("first")
    message = {"seq": 1, "type": "call", "widget": probe, "method": method, "args": list(args)}
    status, body = client.post_raw({"messages": [{**message, "kwargs": kwargs}]})
    assert status == 200 and "ok" in body["results"][0], body
    return probe


def start_push(client: ProtocolClient, count: int, pad: int) -> int:
    """Have the page publish ``count`` ``take(n, pad)`` calls with no flow control."""
    return first_call(client, "push", count, pad=pad)


def read_until_cut(stream: EventStream, limit: int) -> list[int]:
    """Ids of the messages the cut stream delivered; they must be 1..k."""
    events = stream.until_end(timeout=30, limit=limit)
    assert not [e for e in events if e.event == "gone"]  # cut, not gone
    ids = [int(e.id) for e in events if e.event == "message"]
    assert ids == list(range(1, len(ids) + 1))
    return ids


def watch_until_cut(
    server_url: str, page_id: str, probe: int, count: int, outbox_size: int
) -> dict[str, Any]:
    """Poll the page until the push is done and the stream was cut; check the
    outbox bound on every sample."""
    samples: list[dict[str, Any]] = []

    def pushed_and_cut() -> bool:
        samples.append(page_state(server_url, page_id))
        state = samples[-1]
        return bool(
            state["probes"][str(probe)]["pushed"] == count
            and state["stream_cuts"]
            and not state["stream_attached"]
        )

    # The publisher is never held up by the stuck reader, and the server lets
    # go of the stream while the client is still not reading.
    wait_until(pushed_and_cut, timeout=30, interval=0.01)
    for state in samples:
        assert state["outbox_len"] <= outbox_size
    return samples[-1]


def flood_a_stuck_reader(
    server_factory: Any, outbox_size: int, count: int, pad: int
) -> tuple[ProtocolClient, dict[str, Any], int, list[int]]:
    """Open a page whose stream reads nothing (4 KiB receive buffer), push
    ``count`` messages of ``pad`` bytes, wait for the cut, then read what the
    cut stream delivered. Returns the client (open: close it), the page's
    state once cut, the probe's widget id and the ids read."""
    # The bound under test is the outbox's message count: its byte bound
    # (ATHENA_OUTBOX_BYTES) is raised above the flood so it never decides.
    server = server_factory(
        heartbeat=HEARTBEAT,
        outbox_size=outbox_size,
        outbox_bytes=64 * 1024 * 1024,
        page_timeout=30,
    )
    client = ProtocolClient(server.url).open()
    try:
        client.session.mount("http://", SmallBufferAdapter(rcvbuf=4096))
        with client.stream(read_timeout=10) as stream:
            wait_until(lambda: page_state(server.url, client.page_id)["stream_attached"])
            probe = start_push(client, count, pad)
            final = watch_until_cut(server.url, client.page_id, probe, count, outbox_size)
            first = read_until_cut(stream, limit=count + 100)
    except BaseException:
        client.close()
        raise
    return client, final, probe, first


@pytest.mark.parametrize(
    ("outbox_size", "reason"),
    [
        # The backlog bound (half the outbox) is passed long before 2 heartbeats.
        (400, "too far behind"),
        # A backlog far below the bound: the blocked write's time bound cuts it.
        (10_000, "write blocked"),
    ],
)
def test_stuck_reader_is_cut_and_resumes_by_replay_exactly_once(
    server_factory: Any, outbox_size: int, reason: str
) -> None:
    count, pad = 390, 64_000  # 25 MB: the socket buffers hold a few MB at most
    client, final, _, first = flood_a_stuck_reader(server_factory, outbox_size, count, pad)
    with client:
        assert final["stream_cuts"] == [reason]
        assert final["last_seq"] == count
        assert len(first) < count  # the cut really interrupted it

        # The browser's reconnect: Last-Event-ID acknowledges, the rest is replayed.
        last = first[-1] if first else 0
        with client.stream(last_event_id=last, read_timeout=10) as replay:
            rest = replay.events(count - last, timeout=30)
        assert [e.event for e in rest] == ["message"] * (count - last)
        ids = first + [int(e.id) for e in rest]
        assert ids == list(range(1, count + 1))  # each once, in order
        assert [e.json()["args"][0] for e in rest] == list(range(last, count))
        state = page_state(client.base_url, client.page_id)
        assert state["stream_cuts"] == [reason]  # the replay kept up: not cut again


def test_flood_past_the_outbox_is_cut_then_gone_not_a_gap(server_factory: Any) -> None:
    outbox_size, count, pad = 50, 5_000, 4_000  # ~20 MB with no flow control
    client, final, probe, first = flood_a_stuck_reader(server_factory, outbox_size, count, pad)
    with client:
        assert final["last_seq"] == count
        assert final["outbox_bytes"] <= outbox_size * (pad + 200)
        assert final["probes"][str(probe)]["max_outbox"] == outbox_size
        assert len(first) < count - outbox_size  # the rest was dropped, and...
        with client.stream(last_event_id=first[-1] if first else 0) as again:
            events = again.until_end(timeout=5)
        # ...the reconnect is told so.
        assert [(e.event, e.json()) for e in events] == [("gone", {"reason": "outbox-trimmed"})]


def test_slow_consumer_reconnecting_after_trim_gets_gone(server_factory: Any) -> None:
    outbox_size = 50
    server = server_factory(heartbeat=HEARTBEAT, outbox_size=outbox_size)
    with ProtocolClient(server.url).open() as client:
        first_call(client, "publish", outbox_size * 4)
        state = page_state(server.url, client.page_id)
        assert (state["outbox_len"], state["last_seq"]) == (outbox_size, outbox_size * 4)
        with client.stream(last_event_id=0) as stream:
            events = stream.until_end(timeout=5)
        assert [(e.event, e.json()) for e in events] == [("gone", {"reason": "outbox-trimmed"})]
