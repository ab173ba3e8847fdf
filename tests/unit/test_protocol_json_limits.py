"""JSON from the browser: widget values refused, nesting bounded; JSON to it: strict."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_athena.errors import BadMessage, BadRequest
from flask_athena.protocol import MAX_JSON_DEPTH, dumps, loads, parse_batch


def nested_list(depth: int) -> str:
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


@pytest.mark.parametrize(
    "body",
    [
        {"$athena": "widget", "id": 1},
        {
            "messages": [
                {
                    "seq": 1,
                    "type": "call",
                    "widget": 1,
                    "method": "m",
                    "args": [{"$athena": "widget", "id": 1, "html": "<b>"}],
                }
            ]
        },
        {
            "messages": [
                {
                    "seq": 1,
                    "type": "call",
                    "widget": 1,
                    "method": "m",
                    "kwargs": {"x": {"deep": [{"$athena": 0}]}},
                }
            ]
        },
        {"messages": [{"type": "result", "call": 1, "ok": {"$athena": "widget"}}]},
    ],
    ids=["top-level", "in-args", "deep-in-kwargs", "in-result"],
)
def test_widget_key_anywhere_from_the_browser_is_bad_message(body: Any) -> None:
    with pytest.raises(BadMessage) as info:
        parse_batch(json.dumps(body))
    assert info.value.code == "bad-message"


def test_widget_key_is_refused_even_when_json_has_it_twice() -> None:
    with pytest.raises(BadMessage):
        loads('{"$athena": 1, "$athena": 2}')


def test_nesting_at_the_limit_is_accepted() -> None:
    assert loads(nested_list(MAX_JSON_DEPTH)) is not None
    assert loads(nested_object(MAX_JSON_DEPTH)) is not None


@pytest.mark.parametrize("make", [nested_list, nested_object], ids=["list", "object"])
def test_nesting_deeper_than_the_limit_is_bad_request(make: Any) -> None:
    with pytest.raises(BadRequest) as info:
        loads(make(MAX_JSON_DEPTH + 1))
    assert type(info.value) is BadRequest
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_nesting_that_would_exhaust_the_stack_is_bad_request(depth: int) -> None:
    with pytest.raises(BadRequest):
        parse_batch(nested_list(depth))
    with pytest.raises(BadRequest):
        parse_batch('{"messages":' + nested_list(depth) + "}")


def test_integer_too_long_to_parse_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        loads('{"ack": ' + "9" * 5000 + "}")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [1, float("nan")]])
def test_dumps_refuses_nan_and_infinity_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        dumps(value)


def test_dumps_refuses_unknown_objects_with_type_error() -> None:
    with pytest.raises(TypeError):
        dumps(object())


@pytest.mark.parametrize(
    "text", ["a\nb", "a\r\nb", "\r", "line\u2028sep\u2029para", "tab\there", "\x00\x1f"]
)
def test_dumps_never_emits_a_raw_line_break(text: str) -> None:
    encoded = dumps({"text": text, "list": [text]})
    assert "\n" not in encoded and "\r" not in encoded
    assert json.loads(encoded) == {"text": text, "list": [text]}


def test_dumps_is_compact_and_keeps_unicode() -> None:
    assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
