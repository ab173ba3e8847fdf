"""Every string that crosses the wire is valid Unicode (DESIGN §11, issue 13).

A lone UTF-16 surrogate is valid JSON (``"\\ud800"``) but cannot be encoded
to UTF-8; it used to be accepted and to explode later, after a sequence
number was taken or halfway through a broadcast. Tests are named after what
broke.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena.broker.memory import MemoryBroker, MemoryOutbox
from flask_athena.errors import BadRequest
from flask_athena.protocol import dumps, loads, parse_batch, sse_message, valid_text
from flask_athena.testing import AthenaClient
from flask_athena.topics import Topics

from .widgets import Recorder, athena_of, element

LONE = "\ud800"
FFFD = "\ufffd"


# -- protocol -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain", "plain"),
        ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
        (LONE, FFFD),
        ("a\udc00b", f"a{FFFD}b"),
        ("\ud83d\ude00", "\U0001f600"),  # a pair in two code units is the character
        ("\ude00\ud83d", FFFD + FFFD),  # reversed: two lone halves
        ("\ufffe\uffff\ufdd0", "\ufffe\uffff\ufdd0"),  # non-characters encode fine: kept
    ],
)
def test_valid_text_replaces_only_lone_surrogates(text: str, expected: str) -> None:
    assert valid_text(text) == expected
    valid_text(text).encode()  # never raises


def test_escaped_lone_surrogates_are_replaced_everywhere_in_a_body() -> None:
    body = json.dumps({"k\udbff": [LONE, {"x": "\udfff!"}], "pair": "\ud83d\ude00"})
    assert "\\ud800" in body  # json.dumps (like JSON.stringify) escapes it
    assert loads(body.encode()) == {f"k{FFFD}": [FFFD, {"x": f"{FFFD}!"}], "pair": "\U0001f600"}


def test_an_escaped_backslash_before_u_is_not_a_surrogate() -> None:
    assert loads(b'["\\\\ud800"]') == ["\\ud800"]


def test_raw_surrogate_bytes_are_not_utf8_and_refused() -> None:
    # json.loads alone decodes bytes with "surrogatepass" and would accept them.
    with pytest.raises(BadRequest, match="UTF-8"):
        loads(b'["\xed\xa0\x80"]')


def test_a_str_body_with_raw_surrogates_is_made_valid() -> None:
    assert loads(f'["{LONE}"]') == [FFFD]


def test_lone_surrogate_in_call_args_and_result_error_is_replaced() -> None:
    batch = parse_batch(
        json.dumps(
            {
                "messages": [
                    {"type": "call", "seq": 1, "widget": 1, "method": "m", "args": [LONE]},
                    {"type": "result", "call": 1, "error": {"name": LONE, "message": LONE}},
                ]
            }
        )
    )
    assert batch.sequenced[0].args == [FFFD]
    assert batch.results[0].error == {"name": FFFD, "message": FFFD}


def test_dumps_of_app_data_with_a_lone_surrogate_encodes() -> None:
    text = dumps({LONE: [LONE, "ok"]})
    assert json.loads(text.encode()) == {FFFD: [FFFD, "ok"]}


# -- outbox and broadcast -----------------------------------------------------


def test_outbox_seq_never_counts_a_frame_that_failed_to_build() -> None:
    # What broke: last_seq moved before the frame existed, so readers saw an
    # id sent twice and a gap.
    outbox = MemoryOutbox(10)
    with pytest.raises(AttributeError):
        outbox.publish(None)  # type: ignore[arg-type]
    assert outbox.last_seq == 0
    assert outbox.publish(f'"{LONE}"') == 1
    assert outbox.publish('"after"') == 2
    frames = outbox.read(0)
    assert frames == [sse_message(1, f'"{FFFD}"'), sse_message(2, '"after"')]
    assert [f.decode().split("\n")[0] for f in frames] == ["id: 1", "id: 2"]


class _BrokenOutbox:
    def publish(self, data: str) -> int:
        raise RuntimeError("this page's outbox is broken")


class _Page:
    def __init__(self, outbox: Any) -> None:
        self.outbox = outbox
        self.closed_with: str | None = None

    def close(self, reason: str) -> None:
        self.closed_with = reason


class _Element:
    def __init__(self, page: _Page, wid: int) -> None:
        self.page, self.id = page, wid


def test_broadcast_reaches_every_member_when_one_page_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What broke: the loop stopped at the first member that raised.
    topics = Topics(MemoryBroker())
    healthy = [_Page(MemoryOutbox(10)) for _ in range(3)]
    broken = [_Page(_BrokenOutbox()), _Page(_BrokenOutbox())]
    members = [healthy[0], broken[0], healthy[1], broken[1], healthy[2]]
    for wid, page in enumerate(members, 1):
        topics.join("room", _Element(page, wid))  # type: ignore[arg-type]
    with caplog.at_level("ERROR", "flask_athena"):
        assert topics.broadcast("room", "hear", '["hi"]') == 3
    assert [len(p.outbox.read(0)) for p in healthy] == [1, 1, 1]
    assert [p.closed_with for p in broken] == ["error", "error"]
    assert [p.closed_with for p in healthy] == [None, None, None]
    # The first failure with its traceback, the rest counted once.
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert any("failed for 2 pages" in r.getMessage() for r in caplog.records)


# -- through the endpoints ----------------------------------------------------


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder("a")])


def test_lone_surrogate_argument_reaches_the_method_as_fffd(app: Flask) -> None:
    page = AthenaClient(app).open()
    assert page.call(1, "echo", f"x{LONE}y") == f"x{FFFD}y"
    assert element(page).invocations == [("echo", (f"x{FFFD}y",), {})]


def test_lone_surrogate_in_a_server_call_and_a_broadcast_keeps_ids_in_order(app: Flask) -> None:
    # What broke: the page's outbox took an id for a frame that failed to
    # encode, and the broadcast stopped halfway.
    first = AthenaClient(app).open()
    second = AthenaClient(app).open()
    element(first).join("room")
    element(second).join("room")
    assert first.call(1, "ping_back", LONE) == "sent"
    assert athena_of(app).broadcast("room", "hear", LONE) == 2
    assert athena_of(app).broadcast("room", "hear", "later") == 2
    assert first.received_calls() == [[FFFD], [FFFD], ["later"]]
    assert second.received_calls() == [[FFFD], ["later"]]
    ids = [int(f.split(b"\n")[0][4:]) for f in first.live.outbox.read(0) or []]
    assert ids == [1, 2, 3]


def test_lone_surrogate_token_on_close_is_403_not_500(app: Flask) -> None:
    page = AthenaClient(app).open()
    response = page.client.flask.post(
        page.config["close"],
        data=json.dumps({"token": LONE}),
        headers={"Origin": "http://localhost", "Content-Type": "application/json"},
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
