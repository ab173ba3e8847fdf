"""join/leave/broadcast: once per joined element, arguments serialized once."""

from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask

import flask_athena.extension
from flask_athena.testing import AthenaClient

from .widgets import Recorder, athena_of, element


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder("a"), Recorder("b")])


def test_broadcast_calls_each_joined_element_once(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = AthenaClient(app).open()
    second = AthenaClient(app).open()
    for page, wid in [(first, 1), (first, 2), (second, 2)]:
        element(page, wid).join("room")
    element(page=second, widget=2).join("room")  # joining twice changes nothing

    encoded: list[Any] = []
    real_dumps = flask_athena.extension.dumps

    def counting_dumps(value: Any, *args: Any, **kwargs: Any) -> str:
        encoded.append(value)
        return real_dumps(value, *args, **kwargs)

    monkeypatch.setattr(flask_athena.extension, "dumps", counting_dumps)
    reached = athena_of(app).broadcast("room", "hear", "bob", {"text": "hi"})

    assert reached == 3
    assert encoded == [["bob", {"text": "hi"}]]  # serialized once for three elements
    expected = {"type": "call", "call": None, "method": "hear", "args": ["bob", {"text": "hi"}]}
    assert first.received() == [{**expected, "widget": 1}, {**expected, "widget": 2}]
    assert second.received() == [{**expected, "widget": 2}]


def test_broadcast_reaches_only_its_topic(app: Flask) -> None:
    page = AthenaClient(app).open()
    element(page, 1).join("lobby")
    element(page, 2).join("kitchen")
    assert athena_of(app).broadcast("kitchen", "hear", 1) == 1
    assert [m["widget"] for m in page.received()] == [2]


def test_left_element_receives_nothing(app: Flask) -> None:
    page = AthenaClient(app).open()
    element(page, 1).join("room")
    element(page, 1).leave("room")
    element(page, 1).leave("never-joined")
    assert athena_of(app).broadcast("room", "hear") == 0
    assert page.received() == []


def test_closed_page_leaves_every_topic(app: Flask) -> None:
    closing = AthenaClient(app).open()
    staying = AthenaClient(app).open()
    element(closing, 1).join("room")
    element(staying, 1).join("room")
    assert closing.close() == 204
    assert athena_of(app).broadcast("room", "hear", "x") == 1
    assert staying.received_calls("hear") == [["x"]]


def test_broadcast_to_an_empty_topic_reaches_nobody(app: Flask) -> None:
    with app.app_context():
        assert athena_of(app).broadcast("nobody", "hear") == 0


def test_broadcast_of_unserializable_arguments_raises_type_error(app: Flask) -> None:
    page = AthenaClient(app).open()
    element(page, 1).join("room")
    with pytest.raises(TypeError):
        athena_of(app).broadcast("room", "hear", float("nan"))
    assert page.received() == []


def test_join_needs_the_element_on_a_page() -> None:
    with pytest.raises(RuntimeError, match="on a page"):
        Recorder().join("room")
