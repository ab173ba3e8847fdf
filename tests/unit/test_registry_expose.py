"""@expose is the whitelist: what can be exposed, and how exposure is inherited."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from flask_athena import LiveElement, expose
from flask_athena.registry import exposed_names, is_exposed


def test_decorator_form_exposes() -> None:
    class Box:
        @expose
        def say(self, text: str) -> int:
            return len(text)

    assert exposed_names(Box) == {"say"}
    assert Box().say("abc") == 3  # the function is returned unchanged


def test_tutorial_assignment_form_exposes() -> None:
    class Box:
        def say(self, text: str) -> int:
            return len(text)

        say = expose(say)

    assert exposed_names(Box) == {"say"}


def test_unmarked_methods_are_not_exposed() -> None:
    class Box:
        @expose
        def say(self) -> None: ...

        def helper(self) -> None: ...

    assert exposed_names(Box) == {"say"}
    assert not is_exposed(Box.helper)


def test_exposure_is_inherited() -> None:
    class Base:
        @expose
        def say(self) -> str:
            return "base"

    class Child(Base):
        @expose
        def shout(self) -> str:
            return "child"

    assert exposed_names(Child) == {"say", "shout"}


def test_override_without_decorator_stays_exposed() -> None:
    class Base:
        @expose
        def say(self) -> str:
            return "base"

    class Child(Base):
        def say(self) -> str:
            return "child"

    assert "say" in exposed_names(Child)


@pytest.mark.parametrize("name", ["_hidden", "__call__", "__init__", "__getattr__"])
def test_private_and_dunder_names_cannot_be_exposed(name: str) -> None:
    def method(self: Any) -> None: ...

    method.__name__ = name
    with pytest.raises(ValueError, match="private"):
        expose(method)


def test_private_method_in_class_body_fails_at_definition() -> None:
    with pytest.raises(ValueError):

        class Box:
            @expose
            def _secret(self) -> None: ...


@pytest.mark.parametrize(
    "thing",
    [
        property(lambda self: 1),
        staticmethod(lambda: 1),
        classmethod(lambda cls: 1),
        len,
        functools.partial(print, 1),
        42,
        "say",
        None,
        type("Cls", (), {}),
    ],
    ids=[
        "property",
        "staticmethod",
        "classmethod",
        "builtin",
        "partial",
        "int",
        "str",
        "none",
        "class",
    ],
)
def test_non_plain_functions_cannot_be_exposed(thing: Any) -> None:
    with pytest.raises(TypeError, match="plain method"):
        expose(thing)


def test_expose_over_property_in_class_body_fails_at_definition() -> None:
    with pytest.raises(TypeError):

        class Box:
            @expose  # type: ignore[misc]
            @property
            def value(self) -> int:
                return 1


@pytest.mark.parametrize("name", ["detach", "call_remote", "callRemote", "join", "render", "add"])
def test_exposing_a_live_element_reserved_name_fails_at_class_creation(name: str) -> None:
    def method(self: Any) -> None: ...

    method.__name__ = name
    with pytest.raises(TypeError, match=name):
        type("Bad", (LiveElement,), {"js_class": "T.Bad", name: expose(method)})


def test_reserved_name_clash_is_caught_in_a_grandchild_too() -> None:
    class Fine(LiveElement):
        js_class = "T.Fine"

    with pytest.raises(TypeError, match="detach"):

        class Bad(Fine):
            @expose
            def detach(self) -> None: ...
