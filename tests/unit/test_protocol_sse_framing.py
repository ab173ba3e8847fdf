"""SSE frames built by the protocol module parse back to what was sent."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_athena.protocol import (
    HEARTBEAT_EVENT,
    call_message,
    detach_message,
    dumps,
    gone_event,
    sse_event,
    sse_message,
    sse_retry,
    valid_text,
)
from flask_athena.sse import SSEEvent, SSEParser, message_of_frame, parse_events


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


@pytest.mark.parametrize(
    "data",
    [
        "",
        '{"method":"hear","args":["hi"]}',
        dumps({"text": "é\u2028\u2029 ünïcödé 😀 中文", "nl": "a\r\nb"}),
        "x" * 70_000,
        "data: id: 5",  # field names inside the data
    ],
)
def test_message_of_frame_inverts_sse_message_exactly(data: str) -> None:
    for seq in (1, 42, 10**12):
        assert message_of_frame(sse_message(seq, data)) == (seq, data)


@given(st.integers(min_value=0, max_value=2**63), st.text())
@settings(max_examples=300, deadline=None)
def test_message_of_frame_round_trips_every_json_text(seq: int, text: str) -> None:
    # What outboxes keep: one JSON line, a lone surrogate made U+FFFD first.
    data = dumps({"t": valid_text(text)})
    assert message_of_frame(sse_message(seq, data)) == (seq, data)


@pytest.mark.parametrize(
    "frame",
    [
        b"id: 1\ndata: a\nb\n\n",  # data over two lines: never an outbox's
        b"id: 1\ndata: a\rb\n\n",
        b"id: 1\ndata: a\ndata: b\n\n",
        b"id: x\ndata: a\n\n",
        b"id: -1\ndata: a\n\n",
        b"data: a\n\n",
        b"id: 1\ndata: a\n",
        b"event: gone\ndata: {}\n\n",
        b"id: 1\ndata: \xff\n\n",
    ],
)
def test_message_of_frame_refuses_what_sse_message_never_builds(frame: bytes) -> None:
    with pytest.raises(ValueError):
        message_of_frame(frame)
