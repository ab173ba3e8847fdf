"""Server → browser calls: the message, answers, errors, timeouts, cancellation, closed pages."""

from __future__ import annotations

from time import monotonic
from typing import Callable

import gevent
import pytest
from flask import Flask

from flask_athena import CallCancelled, CallTimeout, ConnectionLost, RemoteError
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, element, state_of


@pytest.fixture
def page(make_app: Callable[..., Flask]) -> TestPage:
    return AthenaClient(make_app(lambda: [Recorder()])).open()


def test_call_remote_publishes_a_call_message_with_a_call_id(page: TestPage) -> None:
    call = element(page).call_remote("hear", "bob", {"text": "hi"})
    assert page.received() == [
        {
            "type": "call",
            "call": call.call_id,
            "widget": 1,
            "method": "hear",
            "args": ["bob", {"text": "hi"}],
        }
    ]
    assert not call.ready()


def test_each_call_gets_its_own_id(page: TestPage) -> None:
    first = element(page).call_remote("a")
    second = element(page).call_remote("b")
    assert first.call_id != second.call_id
    assert [m["call"] for m in page.received()] == [first.call_id, second.call_id]


def test_answer_resolves_get(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    page.answer(call.call_id, {"answer": [42]})
    assert call.ready()
    assert call.get(timeout=1) == {"answer": [42]}


def test_answer_with_error_raises_remote_error_with_the_js_name(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    page.answer(call.call_id, error=("TypeError", "x is undefined"))
    with pytest.raises(RemoteError) as info:
        call.get(timeout=1)
    assert info.value.js_name == "TypeError"
    assert info.value.message == "x is undefined"


def test_duplicate_and_unknown_answers_are_ignored(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    page.answer(call.call_id, "first")
    page.answer(call.call_id, "second")
    page.answer(call.call_id + 100, "nobody asked")
    assert call.get(timeout=1) == "first"
    assert page.live.pending_calls == 0


def test_get_without_an_answer_raises_call_timeout(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    with pytest.raises(CallTimeout):
        call.get(timeout=0.05)
    page.answer(call.call_id, "late")  # a late answer still settles it
    assert call.get(timeout=0) == "late"


def test_reaper_expires_calls_past_the_call_timeout(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_CALL_TIMEOUT=5)
    page = AthenaClient(app).open()
    call = element(page).call_remote("ask")
    state_of(app).reap(monotonic() + 1)
    assert not call.ready()
    state_of(app).reap(monotonic() + 6)
    with pytest.raises(CallTimeout):
        call.get(timeout=0)
    assert page.live.pending_calls == 0
    # Not a cancellation: the browser is not told (fire-and-forget calls of
    # an offline page would each add a message).
    assert [m["type"] for m in page.received()] == ["call"]


def test_a_longer_get_timeout_keeps_the_reaper_from_expiring_the_call(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_CALL_TIMEOUT=5)
    page = AthenaClient(app).open()
    call = element(page).call_remote("ask")
    waiter = gevent.spawn(call.get, 60)  # this call may take a minute
    gevent.sleep(0)
    state_of(app).reap(monotonic() + 30)
    assert not call.ready()
    page.answer(call.call_id, "slow but fine")
    assert waiter.get(timeout=1) == "slow but fine"


def test_cancel_fails_get_tells_the_browser_and_ignores_the_late_answer(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    assert call.cancel() is True
    with pytest.raises(CallCancelled):
        call.get(timeout=1)
    sent = page.received()
    assert [m["type"] for m in sent] == ["call", "cancel"]
    assert sent[-1] == {"type": "cancel", "call": call.call_id}
    assert page.live.pending_calls == 0
    page.answer(call.call_id, "late")  # ignored
    with pytest.raises(CallCancelled):
        call.get(timeout=0)
    assert call.cancel() is False  # once
    assert page.received() == []


def test_cancel_wakes_a_greenlet_waiting_in_get(page: TestPage) -> None:
    call = element(page).call_remote("ask")
    waiter = gevent.spawn(call.get, 30)
    gevent.sleep(0)
    call.cancel()
    waiter.join(timeout=1)
    assert isinstance(waiter.exception, CallCancelled)


def test_cancel_after_the_answer_or_close_does_nothing(page: TestPage) -> None:
    answered = element(page).call_remote("ask")
    page.answer(answered.call_id, 1)
    assert answered.cancel() is False
    assert answered.get(timeout=0) == 1
    pending = element(page).call_remote("ask")
    page.live.close("closed")
    assert pending.cancel() is False
    with pytest.raises(ConnectionLost):
        pending.get(timeout=0)


def test_closing_the_page_fails_pending_calls_with_connection_lost(page: TestPage) -> None:
    first = element(page).call_remote("a")
    second = page.live.call_remote("b")
    assert page.close() == 204
    for call in (first, second):
        with pytest.raises(ConnectionLost):
            call.get(timeout=1)


def test_call_remote_on_a_closed_page_fails_at_once(page: TestPage) -> None:
    live = page.live
    live.close("closed")
    with pytest.raises(ConnectionLost):
        live.call_remote("late").get(timeout=0)


def test_page_call_remote_targets_a_registered_global(page: TestPage) -> None:
    call = page.live.call_remote("notify", "saved")
    assert page.received() == [
        {
            "type": "call",
            "call": call.call_id,
            "widget": None,
            "method": "notify",
            "args": ["saved"],
        }
    ]
    page.answer(call.call_id, True)
    assert call.get(timeout=1) is True


@pytest.mark.parametrize("method", ["", None, 5])
def test_call_remote_needs_a_method_name(page: TestPage, method: object) -> None:
    with pytest.raises(TypeError):
        element(page).call_remote(method)  # type: ignore[arg-type]


def test_unserializable_argument_raises_type_error_and_sends_nothing(page: TestPage) -> None:
    with pytest.raises(TypeError):
        element(page).call_remote("x", float("nan"))
    with pytest.raises(TypeError):
        element(page).call_remote("x", object())
    assert page.received() == []
