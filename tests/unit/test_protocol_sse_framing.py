"""SSE frames built by the protocol module parse back to what was sent."""

from __future__ import annotations

import json
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

from .widgets import parse_frames


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
    [event] = parse_frames(frame)
    assert event["id"] == "17"
    assert json.loads(event["data"]) == {
        "type": "call",
        "call": call,
        "widget": widget,
        "method": method,
        "args": args,
    }


def test_detach_message_round_trips() -> None:
    [event] = parse_frames(sse_message(2, detach_message(9)))
    assert event["id"] == "2"
    assert json.loads(event["data"]) == {"type": "detach", "widget": 9}


def test_consecutive_messages_parse_as_separate_events() -> None:
    stream = b"".join(sse_message(seq, dumps({"n": seq})) for seq in range(1, 4))
    events = parse_frames(stream)
    assert [(e["id"], json.loads(e["data"])) for e in events] == [
        ("1", {"n": 1}),
        ("2", {"n": 2}),
        ("3", {"n": 3}),
    ]


def test_named_event_has_no_id() -> None:
    [event] = parse_frames(sse_event("custom", {"a": "b\nc"}))
    assert "id" not in event
    assert event["event"] == "custom"
    assert json.loads(event["data"]) == {"a": "b\nc"}


def test_heartbeat_and_gone_events() -> None:
    [heartbeat] = parse_frames(HEARTBEAT_EVENT)
    assert heartbeat == {"event": "heartbeat", "data": "{}"}
    [gone] = parse_frames(gone_event("outbox-trimmed"))
    assert gone["event"] == "gone"
    assert json.loads(gone["data"]) == {"reason": "outbox-trimmed"}


def test_retry_field() -> None:
    assert parse_frames(sse_retry(1500)) == [{"retry": "1500"}]
