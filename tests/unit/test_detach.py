"""Detaching from either side runs detached() hooks children first and frees state."""

from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from flask_athena import LiveElement
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, element


def tree(log: list[tuple[str, str]]) -> Callable[[], list[LiveElement]]:
    """parent(1) -> child(2) -> grandchild(3); parent -> sibling(4)."""

    def widgets() -> list[LiveElement]:
        parent = Recorder("parent", log)
        child = parent.add(Recorder("child", log))
        child.add(Recorder("grandchild", log))
        parent.add(Recorder("sibling", log))
        return [parent]

    return widgets


def open_tree(make_app: Callable[..., Flask]) -> tuple[TestPage, list[tuple[str, str]]]:
    log: list[tuple[str, str]] = []
    page = AthenaClient(make_app(tree(log))).open()
    return page, log


def test_server_detach_tells_the_browser_and_runs_hooks_children_first(
    make_app: Callable[..., Flask],
) -> None:
    page, log = open_tree(make_app)
    parent = element(page, 1)
    parent.detach()
    assert page.received() == [{"type": "detach", "widget": 1}]
    assert log == [
        ("grandchild", "detached"),
        ("child", "detached"),
        ("sibling", "detached"),
        ("parent", "detached"),
    ]
    assert page.live.elements == {}
    assert parent.page is None


def test_server_detach_of_a_child_leaves_the_parent(make_app: Callable[..., Flask]) -> None:
    page, log = open_tree(make_app)
    parent, child = element(page, 1), element(page, 2)
    child.detach()
    assert page.received() == [{"type": "detach", "widget": 2}]
    assert log == [("grandchild", "detached"), ("child", "detached")]
    assert child.parent is None and child not in parent.children
    assert sorted(page.live.elements) == [1, 4]


def test_browser_detach_runs_hooks_and_sends_nothing_back(
    make_app: Callable[..., Flask],
) -> None:
    page, log = open_tree(make_app)
    status, body = page.detach(2)
    assert (status, body) == (200, {"results": [{"seq": 1, "ok": None}]})
    assert log == [("grandchild", "detached"), ("child", "detached")]
    assert page.received() == []
    assert sorted(page.live.elements) == [1, 4]


def test_calls_to_a_detached_widget_find_no_widget(make_app: Callable[..., Flask]) -> None:
    page, _ = open_tree(make_app)
    page.detach(2)
    status, body = page.send({"type": "call", "widget": 3, "method": "echo", "args": [1]})
    assert status == 404
    assert body["results"][0]["error"]["code"] == "widget-not-found"


def test_detaching_twice_is_harmless(make_app: Callable[..., Flask]) -> None:
    page, log = open_tree(make_app)
    child = element(page, 2)
    child.detach()
    child.detach()
    assert log.count(("child", "detached")) == 1
    status, body = page.detach(2)
    assert status == 404 and body["results"][0]["error"]["code"] == "widget-not-found"


def test_detached_element_leaves_its_topics(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()])
    page = AthenaClient(app).open()
    recorder = element(page)
    recorder.join("room")
    recorder.detach()
    page.received()
    assert app.extensions["athena"].athena.broadcast("room", "hear", 1) == 0
    assert page.received() == []


def test_hook_that_raises_is_logged_and_does_not_stop_the_detach(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    class Faulty(Recorder):
        def detached(self) -> None:
            raise RuntimeError("hook bug")

    def widgets() -> list[LiveElement]:
        parent = Recorder("parent")
        parent.add(Faulty("faulty"))
        return [parent]

    page = AthenaClient(make_app(widgets)).open()
    element(page, 1).detach()
    assert page.live.elements == {}
    assert "hook bug" in caplog.text
