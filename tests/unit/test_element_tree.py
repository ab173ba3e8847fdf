"""Nesting: children before and after render, placed by the template or appended."""

from __future__ import annotations

import re
from typing import Callable

import pytest
from flask import Flask
from jinja2 import ChoiceLoader, DictLoader
from markupsafe import Markup

from flask_athena import LiveElement
from flask_athena.testing import AthenaClient, parse_widgets

from .widgets import Recorder, element


class Placing(Recorder):
    """Puts its first child inside a <section> itself."""

    def render(self) -> str:
        return f"<section>{self.children[0].__html__()}</section>"


class Templated(LiveElement):
    js_class = "Test.Templated"
    template = "templated.html"

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name


def family() -> list[LiveElement]:
    parent = Recorder("parent")
    parent.add(Recorder("first"))
    parent.add(Recorder("second"))
    return [parent]


def test_children_added_before_render_are_on_the_page(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(family)).open()
    parent, first, second = (element(page, wid) for wid in (1, 2, 3))
    assert parent.children == [first, second]
    assert first.parent is parent and second.parent is parent
    assert [w.args for w in page.widgets] == [["parent"], ["first"], ["second"]]


def test_children_not_placed_by_the_template_are_appended_inside_the_parent(
    make_app: Callable[..., Flask],
) -> None:
    page = AthenaClient(make_app(family)).open()
    body = page.html.split("<body>")[1]
    match = re.search(r'<div data-athena-widget="1".*</div></body>', body, re.S)
    assert match is not None
    inner = match.group(0)
    assert inner.index('data-athena-widget="2"') < inner.index('data-athena-widget="3"')
    assert inner.count("data-athena-widget") == 3


def test_child_placed_by_the_template_is_not_rendered_twice(
    make_app: Callable[..., Flask],
) -> None:
    def widgets() -> list[LiveElement]:
        parent = Placing("parent")
        parent.add(Recorder("child"))
        return [parent]

    page = AthenaClient(make_app(widgets)).open()
    assert page.html.count('data-athena-widget="2"') == 1
    assert re.search(r'<section><div data-athena-widget="2"', page.html)


def test_template_attribute_renders_escaped_values(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Templated("<b>&")])
    app.jinja_env.loader = ChoiceLoader(
        [DictLoader({"templated.html": "<p>{{ element.name }}</p>"})]
    )
    page = AthenaClient(app).open()
    assert "<p>&lt;b&gt;&amp;</p>" in page.html


def test_initial_arguments_are_escaped_in_the_attribute(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder('"><script>x</script>')])).open()
    assert "<script>x" not in page.html
    assert page.widgets[0].args == ['"><script>x</script>']


def test_child_added_after_render_joins_the_page(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder("parent")])).open()
    parent = element(page, 1)
    late = parent.add(Recorder("late"))
    assert late.page is page.live and late.id == 2
    assert late.parent is parent and parent.children == [late]
    assert page.call(2, "echo", "late") == "late"


def test_child_passed_to_call_remote_arrives_as_a_widget_under_its_parent(
    make_app: Callable[..., Flask],
) -> None:
    page = AthenaClient(make_app(lambda: [Recorder("parent")])).open()
    parent = element(page, 1)
    parent.call_remote("addChild", Recorder("kid"))
    [message] = page.received()
    [value] = message["args"]
    assert value["$athena"] == "widget" and value["parent"] == 1
    kid = element(page, value["id"])
    assert kid.parent is parent and kid in parent.children
    assert parse_widgets(value["html"])[0].args == ["kid"]


def test_element_already_on_another_page_cannot_be_added(
    make_app: Callable[..., Flask],
) -> None:
    client = AthenaClient(make_app(lambda: [Recorder()]))
    first, second = client.open(), client.open()
    with pytest.raises(ValueError, match="another page"):
        second.live.add(element(first, 1))


def test_element_with_a_parent_elsewhere_cannot_be_re_parented() -> None:
    child = Recorder()
    Recorder().add(child)
    with pytest.raises(ValueError, match="already has a parent"):
        Recorder().add(child)


def test_markup_is_safe_for_jinja(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder()])).open()
    assert isinstance(element(page).__html__(), Markup)
