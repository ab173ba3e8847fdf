"""The example app's todo list: bounded work per call (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
from flask import Flask

from example_app import create_app
from example_app.todo import MAX_ITEMS, TodoList
from flask_athena.testing import AthenaClient, CallFailed, TestPage


@pytest.fixture
def app() -> Iterator[Flask]:
    app = create_app({"TESTING": True})
    yield app
    app.extensions["athena"].shutdown()


def todo_list(page: TestPage) -> TodoList:
    element = page.live.elements[1]
    assert isinstance(element, TodoList)
    return element


def test_server_adds_past_the_item_limit_is_refused_in_the_call_without_traceback(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    # What broke: every call spawned a greenlet that raised past 100 items
    # and logged a traceback, while the browser heard nothing.
    page = AthenaClient(app).open("/todo")
    todos = todo_list(page)
    while len(todos.children) < MAX_ITEMS:
        page.call(1, "add_item", f"item {len(todos.children)}")
    page.received()
    with caplog.at_level("INFO"):
        for _ in range(5):
            with pytest.raises(CallFailed) as failed:
                page.call(1, "server_adds")
            assert failed.value.code == "bad-arguments"
    assert todos.adding is None  # no greenlet was spawned
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def test_server_adds_runs_one_greenlet_per_list(app: Flask) -> None:
    # What broke: one greenlet per call, unbounded.
    page = AthenaClient(app).open("/todo")
    todos = todo_list(page)
    assert page.call(1, "server_adds", "first") is None
    adding = todos.adding
    assert adding is not None
    with pytest.raises(CallFailed) as failed:
        page.call(1, "server_adds", "second")
    assert failed.value.code == "bad-arguments"
    assert todos.adding is adding
    adding.join(timeout=10)
    assert adding.successful()
    assert [c[0] for c in page.received_calls("insert_item")] != []
    assert page.call(1, "server_adds", "third") is None  # the next one may start


def test_a_pending_server_add_dies_with_its_page(app: Flask) -> None:
    page = AthenaClient(app).open("/todo")
    assert page.call(1, "server_adds") is None
    adding = todo_list(page).adding
    assert adding is not None
    assert page.close() == 204
    gevent.sleep(0)
    assert adding.dead
