"""parse_batch: valid batches parse; every malformed shape is refused with its code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from flask_athena.errors import BadMessage, BadRequest
from flask_athena.protocol import (
    MAX_MESSAGES_PER_BATCH,
    CallMessage,
    DetachMessage,
    ResultMessage,
    parse_batch,
)


def batch(*messages: Any, **extra: Any) -> str:
    return json.dumps({"messages": list(messages), **extra})


def call(seq: Any = 1, **fields: Any) -> dict[str, Any]:
    message = {"seq": seq, "type": "call", "widget": 1, "method": "say", "args": [], "kwargs": {}}
    message.update(fields)
    return message


def test_full_batch_parses_into_typed_messages() -> None:
    parsed = parse_batch(
        batch(
            call(5, args=["hi"], kwargs={"loud": True}),
            {"seq": 6, "type": "detach", "widget": 9},
            {"type": "result", "call": 4, "ok": 12},
            {"type": "result", "call": 5, "error": {"name": "TypeError", "message": "boom"}},
            ack=17,
        )
    )
    assert parsed.ack == 17
    assert parsed.sequenced == [
        CallMessage(5, 1, "say", ["hi"], {"loud": True}),
        DetachMessage(6, 9),
    ]
    assert parsed.results == [
        ResultMessage(4, 12, None),
        ResultMessage(5, None, {"name": "TypeError", "message": "boom"}),
    ]


def test_empty_object_is_an_empty_batch() -> None:
    parsed = parse_batch(b"{}")
    assert (parsed.ack, parsed.sequenced, parsed.results) == (None, [], [])


def test_args_and_kwargs_default_to_empty() -> None:
    parsed = parse_batch(batch({"seq": 1, "type": "call", "widget": 0, "method": "m"}))
    assert parsed.sequenced == [CallMessage(1, 0, "m", [], {})]


def test_result_with_null_ok_is_a_value_not_an_error() -> None:
    assert parse_batch(batch({"type": "result", "call": 1, "ok": None})).results == [
        ResultMessage(1, None, None)
    ]


def test_result_error_fields_are_coerced_to_bounded_text() -> None:
    parsed = parse_batch(
        batch({"type": "result", "call": 1, "error": {"name": 5, "message": "x" * 10_000}})
    )
    error = parsed.results[0].error
    assert error is not None
    assert error["name"] == "Error"
    assert len(error["message"]) == 2000


def test_batch_of_exactly_the_maximum_is_accepted() -> None:
    messages = [call(seq) for seq in range(1, MAX_MESSAGES_PER_BATCH + 1)]
    assert len(parse_batch(batch(*messages)).sequenced) == MAX_MESSAGES_PER_BATCH


@pytest.mark.parametrize(
    "body",
    [
        "[]",
        '"messages"',
        "17",
        "null",
        "true",
    ],
    ids=["list", "string", "number", "null", "bool"],
)
def test_non_object_body_is_bad_request(body: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_batch(body)
    assert info.value.code == "bad-request"
    assert info.value.status_code == 400


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"{'a': 1}", b"\xff\xfe\xfa", b'{"messages": [}', b"NaN]", '{"a": 1} x'],
    ids=["empty", "truncated", "single-quotes", "not-utf8", "broken-list", "junk", "trailing"],
)
def test_bad_json_is_bad_request(body: bytes | str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_batch(body)
    assert type(info.value) is BadRequest
    assert info.value.code == "bad-request"


@pytest.mark.parametrize("messages", [{}, "x", 3, None, True], ids=repr)
def test_messages_that_is_not_a_list_is_bad_request(messages: Any) -> None:
    with pytest.raises(BadRequest) as info:
        parse_batch(json.dumps({"messages": messages}))
    assert type(info.value) is BadRequest


def test_more_than_max_messages_is_bad_request() -> None:
    messages = [call(seq) for seq in range(1, MAX_MESSAGES_PER_BATCH + 2)]
    with pytest.raises(BadRequest) as info:
        parse_batch(batch(*messages))
    assert type(info.value) is BadRequest


@pytest.mark.parametrize("seq", [0, -1, True, False, 1.0, "1", None, [1]], ids=repr)
def test_invalid_call_seq_is_bad_message(seq: Any) -> None:
    with pytest.raises(BadMessage) as info:
        parse_batch(batch(call(seq)))
    assert info.value.code == "bad-message"
    assert info.value.status_code == 400


@pytest.mark.parametrize("seq", [0, -3, True], ids=repr)
def test_invalid_detach_seq_is_bad_message(seq: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch({"seq": seq, "type": "detach", "widget": 1}))


def test_missing_seq_is_bad_message() -> None:
    message = call()
    del message["seq"]
    with pytest.raises(BadMessage):
        parse_batch(batch(message))


@pytest.mark.parametrize("seqs", [(1, 3), (2, 1), (1, 1), (5, 6, 8)], ids=repr)
def test_non_consecutive_seqs_in_one_batch_are_bad_message(seqs: tuple[int, ...]) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(*(call(seq) for seq in seqs)))


def test_results_between_sequenced_messages_do_not_break_consecutiveness() -> None:
    parsed = parse_batch(batch(call(1), {"type": "result", "call": 1, "ok": 0}, call(2)))
    assert [m.seq for m in parsed.sequenced] == [1, 2]


@pytest.mark.parametrize(
    "fields",
    [
        {"method": None},
        {"method": ""},
        {"method": 5},
        {"method": "x" * 129},
    ],
    ids=["null", "empty", "number", "too-long"],
)
def test_call_with_bad_method_is_bad_message(fields: dict[str, Any]) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(call(**fields)))


def test_call_without_method_is_bad_message() -> None:
    message = call()
    del message["method"]
    with pytest.raises(BadMessage):
        parse_batch(batch(message))


@pytest.mark.parametrize("args", [{}, "a", 1, None], ids=repr)
def test_args_that_are_not_a_list_are_bad_message(args: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(call(args=args)))


@pytest.mark.parametrize("kwargs", [[], "a", 1, None], ids=repr)
def test_kwargs_that_are_not_an_object_are_bad_message(kwargs: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(call(kwargs=kwargs)))


@pytest.mark.parametrize("widget", [-1, "1", None, 1.5, True], ids=repr)
def test_bad_widget_id_is_bad_message(widget: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(call(widget=widget)))


def test_result_without_ok_or_error_is_bad_message() -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch({"type": "result", "call": 1}))


@pytest.mark.parametrize("error", ["boom", 1, None, ["x"]], ids=repr)
def test_result_error_that_is_not_an_object_is_bad_message(error: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch({"type": "result", "call": 1, "error": error}))


@pytest.mark.parametrize("call_id", [-1, "1", None, True], ids=repr)
def test_result_with_bad_call_id_is_bad_message(call_id: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch({"type": "result", "call": call_id, "ok": 1}))


@pytest.mark.parametrize("kind", [None, "CALL", "ack", 1], ids=repr)
def test_unknown_message_type_is_bad_message(kind: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch({"seq": 1, "type": kind, "widget": 1, "method": "m"}))


@pytest.mark.parametrize("message", [[], "call", 1, None], ids=repr)
def test_message_that_is_not_an_object_is_bad_message(message: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(batch(message))


@pytest.mark.parametrize("ack", [-1, "3", 1.5, True], ids=repr)
def test_bad_ack_is_bad_message(ack: Any) -> None:
    with pytest.raises(BadMessage):
        parse_batch(json.dumps({"ack": ack}))
