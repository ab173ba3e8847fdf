"""SSE frames built by the protocol module parse back to what was sent."""

from __future__ import annotations

from typing import Any

import pytest

from flask_athena.protocol import (
    HEARTBEAT_EVENT,
    call_message,
    detach_message,
    dumps,
    gone_event,
    sse_event,
    sse_message,
    sse_retry,
)
from flask_athena.sse import SSEEvent, SSEParser, parse_events


@pytest.mark.parametrize(
    ("call", "widget", "method", "args"),
    [
        (4, 3, "hear", ["bob", "hi"]),
        (None, 3, "hear", []),
        (7, None, "globalFn", [{"nested": [1, 2.5, None, True]}]),
        (1, 1, 'quote"and\\slash\nnewline', ["é\u2028", "a\r\nb"]),
    ],
)
def test_call_message_round_trips(
    call: int | None, widget: int | None, method: str, args: list[Any]
) -> None:
    data = call_message(call, widget, method, dumps(args))
    frame = sse_message(17, data)
    [event] = parse_events(frame)
    assert event.id == "17"
    assert event.json() == {
        "type": "call",
        "call": call,
        "widget": widget,
        "method": method,
        "args": args,
    }


def test_detach_message_round_trips() -> None:
    [event] = parse_events(sse_message(2, detach_message(9)))
    assert event.id == "2"
    assert event.json() == {"type": "detach", "widget": 9}


def test_consecutive_messages_parse_as_separate_events() -> None:
    stream = b"".join(sse_message(seq, dumps({"n": seq})) for seq in range(1, 4))
    events = parse_events(stream)
    assert [(e.id, e.json()) for e in events] == [
        ("1", {"n": 1}),
        ("2", {"n": 2}),
        ("3", {"n": 3}),
    ]


def test_named_event_has_no_id() -> None:
    [event] = parse_events(sse_event("custom", {"a": "b\nc"}))
    assert event.id is None
    assert event.event == "custom"
    assert event.json() == {"a": "b\nc"}


def test_heartbeat_and_gone_events() -> None:
    [heartbeat] = parse_events(HEARTBEAT_EVENT)
    assert heartbeat == SSEEvent("heartbeat", "{}")
    [gone] = parse_events(gone_event("outbox-trimmed"))
    assert gone.event == "gone"
    assert gone.json() == {"reason": "outbox-trimmed"}


def test_retry_field() -> None:
    parser = SSEParser()
    assert parser.feed(sse_retry(1500)) == []
    assert parser.retry == 1500


def test_the_parser_follows_eventsource_rules_across_chunks() -> None:
    parser = SSEParser()
    stream = b": comment\r\nid: 7\r\ndata: a\r\ndata: b\r\n\r\nevent: x\rdata:c\r\n\n"
    events = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert events == [SSEEvent("message", "a\nb", "7"), SSEEvent("x", "c")]
    assert parser.last_id == "7"
    assert parser.feed(b"data: cut before its blank line\n") == []
