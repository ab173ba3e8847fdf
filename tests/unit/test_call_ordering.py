"""Browser calls run one at a time in seq order, exactly once; results never wait."""

from __future__ import annotations

from typing import Any, Callable

import gevent
import pytest
from flask import Flask
from gevent.event import Event

from flask_athena import expose
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, call_body, element


class Asker(Recorder):
    js_class = "Test.Asker"

    def __init__(self) -> None:
        super().__init__("asker")
        self.asked = Event()

    @expose
    def ask_browser(self, question: str) -> str:
        """Waits for the browser's answer inside an exposed method."""
        self._note("ask_browser", question)
        call = self.call_remote("ask", question)
        self.asked.set()
        return f"browser said {call.get(timeout=5)}"


@pytest.fixture
def page(make_app: Callable[..., Flask]) -> TestPage:
    return AthenaClient(make_app(lambda: [Asker()])).open()


def calls(*seqs: int, method: str = "echo") -> dict[str, Any]:
    return {
        "messages": [
            {"seq": seq, "type": "call", "widget": 1, "method": method, "args": [seq]}
            for seq in seqs
        ]
    }


def test_calls_of_one_batch_run_in_seq_order(page: TestPage) -> None:
    status, body = page.post(calls(1, 2, 3, 4, 5))
    assert status == 200
    assert body == {"results": [{"seq": s, "ok": s} for s in range(1, 6)]}
    assert element(page).invocations == [("echo", (s,), {}) for s in range(1, 6)]


def test_retried_batch_is_answered_from_the_record_not_rerun(page: TestPage) -> None:
    first = page.post(calls(1, 2))
    retry = page.post(calls(1, 2))
    assert first == retry == (200, {"results": [{"seq": 1, "ok": 1}, {"seq": 2, "ok": 2}]})
    assert element(page).invoked("echo") == 2


def test_retry_overlapping_new_seqs_runs_only_the_new_ones(page: TestPage) -> None:
    page.post(calls(1, 2))
    status, body = page.post(calls(1, 2, 3))
    assert status == 200
    assert [r["ok"] for r in body["results"]] == [1, 2, 3]
    assert element(page).invocations == [("echo", (s,), {}) for s in (1, 2, 3)]


def test_seq_gap_is_409_with_the_expected_seq_and_runs_nothing(page: TestPage) -> None:
    page.post(calls(1))
    status, body = page.post(calls(3, 4))
    assert status == 409
    assert body == {
        "error": {
            "code": "sequence-gap",
            "message": "Message sequence number is ahead of the next expected one.",
            "expected": 2,
        }
    }
    assert element(page).invoked("echo") == 1
    # The refused batch used no numbers: seq 2 is still next.
    assert page.post(calls(2)) == (200, {"results": [{"seq": 2, "ok": 2}]})


def test_first_seq_must_be_one(page: TestPage) -> None:
    status, body = page.post(calls(2))
    assert (status, body["error"]["expected"]) == (409, 1)
    assert element(page).invocations == []


def test_reusing_a_seq_whose_record_was_pruned_is_an_error(page: TestPage) -> None:
    page.post(calls(1))
    page.post(calls(2))  # starting at 2 says the browser has the answer to 1
    status, body = page.post(calls(1))
    assert status == 400
    [result] = body["results"]
    assert result["seq"] == 1 and result["error"]["code"] == "bad-message"
    assert element(page).invoked("echo") == 2


def test_failed_call_still_uses_its_seq(page: TestPage) -> None:
    status, body = page.post(calls(1, method="helper"))
    assert status == 404 and body["results"][0]["error"]["code"] == "method-not-found"
    assert page.post(calls(2)) == (200, {"results": [{"seq": 2, "ok": 2}]})


def test_batch_with_a_failing_call_answers_every_call(page: TestPage) -> None:
    body = calls(1, 2, 3)
    body["messages"][1]["method"] = "nope"
    status, reply = page.post(body)
    assert status == 404
    assert [("ok" in r, r["seq"]) for r in reply["results"]] == [(True, 1), (False, 2), (True, 3)]
    assert element(page).invocations == [("echo", (1,), {}), ("echo", (3,), {})]


def test_exposed_method_waiting_on_the_browser_does_not_deadlock(page: TestPage) -> None:
    asker = element(page)
    running = gevent.spawn(page.call, 1, "ask_browser", "favourite colour?")
    try:
        assert asker.asked.wait(timeout=5)
        [message] = page.received()
        assert message["method"] == "ask" and message["args"] == ["favourite colour?"]
        page.answer(message["call"], "blue")  # a second POST while the call runs
        assert running.get(timeout=5) == "browser said blue"
    finally:
        running.kill(block=True, timeout=1)


def test_later_batch_waits_for_the_running_call(page: TestPage) -> None:
    asker = element(page)
    first = gevent.spawn(page.post, call_body(1, "ask_browser", "q"))
    greenlets = [first]
    try:
        assert asker.asked.wait(timeout=5)
        second = gevent.spawn(page.post, call_body(2, "echo", "after"))
        greenlets.append(second)
        gevent.idle()  # let the second POST run as far as it can: it must queue
        assert not second.ready()
        assert asker.invocations == [("ask_browser", ("q",), {})]
        [message] = page.received()
        page.answer(message["call"], "yes")
        assert first.get(timeout=5) == (200, {"results": [{"seq": 1, "ok": "browser said yes"}]})
        assert second.get(timeout=5) == (200, {"results": [{"seq": 2, "ok": "after"}]})
        assert [name for name, _, _ in asker.invocations] == ["ask_browser", "echo"]
    finally:
        gevent.killall(greenlets, block=True, timeout=1)
