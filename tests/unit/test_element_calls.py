"""Browser → server calls through AthenaClient: arguments, return values, widget values."""

from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from flask_athena.testing import AthenaClient, CallFailed, TestPage, parse_widgets

from .widgets import Recorder, element


@pytest.fixture
def page(make_app: Callable[..., Flask]) -> TestPage:
    return AthenaClient(make_app(lambda: [Recorder("alice")])).open()


def test_page_markup_lists_the_widget_with_its_initial_arguments(page: TestPage) -> None:
    [widget] = page.widgets
    assert (widget.id, widget.js_class, widget.args) == (1, "Test.Recorder", ["alice"])
    assert 'data-athena-module="/static/athena/Test.js"' in page.html
    assert page.config["calls"] == f"/_athena/{page.id}/calls"
    assert page.config["events"] == f"/_athena/{page.id}/events"


def test_positional_arguments_reach_the_method_and_the_value_comes_back(page: TestPage) -> None:
    assert page.call(page.widget("Test.Recorder"), "total", 2, 3) == 5
    assert element(page).invocations == [("total", (2, 3), {"scale": 1})]


def test_keyword_arguments_reach_the_method(page: TestPage) -> None:
    assert page.call(1, "total", 2, b=3, scale=10) == 50
    assert page.call(1, "total", a=1, scale=2) == 2


@pytest.mark.parametrize(
    "value",
    [None, 0, -1.5, "text with \n newline", [1, [2, [3]]], {"nested": {"list": [True, None]}}],
    ids=repr,
)
def test_json_values_round_trip_through_an_exposed_method(page: TestPage, value: object) -> None:
    assert page.call(1, "echo", value) == value


def test_returned_live_element_arrives_as_a_widget_value(page: TestPage) -> None:
    value = page.call(1, "spawn", "bob")
    assert set(value) == {"$athena", "id", "parent", "html"}
    assert value["$athena"] == "widget"
    assert value["parent"] == 1
    assert f'data-athena-widget="{value["id"]}"' in value["html"]
    [widget] = parse_widgets(value["html"])
    assert (widget.js_class, widget.args) == ("Test.Recorder", ["bob"])


def test_returned_live_element_becomes_a_callable_child_of_the_caller(page: TestPage) -> None:
    child_id = page.call(1, "spawn", "bob")["id"]
    parent, child = element(page, 1), element(page, child_id)
    assert child.parent is parent
    assert parent.children == [child]
    assert page.call(child_id, "echo", "from child") == "from child"
    assert child.invoked("echo") == 1 and parent.invoked("echo") == 0


def test_exposed_method_may_call_the_browser_without_waiting(page: TestPage) -> None:
    assert page.call(1, "ping_back", 7) == "sent"
    [message] = page.received()
    assert message["method"] == "pong" and message["args"] == [7]


def test_unexposed_method_raises_call_failed_with_its_code(page: TestPage) -> None:
    with pytest.raises(CallFailed) as info:
        page.call(1, "helper")
    assert (info.value.status, info.value.code) == (404, "method-not-found")
    assert element(page).invocations == []
