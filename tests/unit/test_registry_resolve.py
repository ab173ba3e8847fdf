"""resolve() finds only exposed methods; bind() checks arguments before anything runs."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from flask_athena import LiveElement, expose
from flask_athena.element import RESERVED_NAMES
from flask_athena.errors import BadArguments, MethodNotFound
from flask_athena.registry import bind, resolve


class Target:
    def __init__(self) -> None:
        self.ran: list[str] = []

    @expose
    def say(self, text: str, *, loud: bool = False) -> str:
        self.ran.append("say")
        return text.upper() if loud else text

    @expose
    def maybe_reserved(self) -> None:
        self.ran.append("maybe_reserved")

    def helper(self) -> None:
        self.ran.append("helper")

    def _private(self) -> None:
        self.ran.append("_private")


class Element(LiveElement):
    js_class = "T.Element"

    @expose
    def hello(self) -> str:
        return "hi"


def test_resolve_returns_the_bound_exposed_method() -> None:
    target = Target()
    method = resolve(target, "say")
    assert method("x", loud=True) == "X"
    assert target.ran == ["say"]


@pytest.mark.parametrize(
    "name",
    ["missing", "helper", "_private", "__init__", "__class__", "__dict__", "ran", ""],
)
def test_resolve_refuses_missing_unexposed_private_and_dunder(name: str) -> None:
    target = Target()
    with pytest.raises(MethodNotFound) as info:
        resolve(target, name)
    assert info.value.code == "method-not-found"
    assert target.ran == []


def test_missing_and_unexposed_give_the_same_error() -> None:
    with pytest.raises(MethodNotFound) as missing:
        resolve(Target(), "missing")
    with pytest.raises(MethodNotFound) as unexposed:
        resolve(Target(), "helper")
    assert missing.value.to_json() == unexposed.value.to_json()


def test_resolve_refuses_reserved_names() -> None:
    with pytest.raises(MethodNotFound):
        resolve(Target(), "maybe_reserved", reserved=frozenset({"maybe_reserved"}))


@pytest.mark.parametrize("name", ["detach", "call_remote", "callRemote", "connected", "render"])
def test_live_element_api_is_never_resolvable(name: str) -> None:
    with pytest.raises(MethodNotFound):
        resolve(Element(), name, RESERVED_NAMES)


def test_instance_attribute_cannot_stand_in_for_an_exposed_method() -> None:
    target = Target()
    target.say = lambda *a, **k: "hijacked"  # type: ignore[method-assign]
    assert resolve(target, "say")("x") == "x"


def test_exposed_function_stored_on_an_instance_is_not_resolvable() -> None:
    def sneaky(self: Any) -> str:
        return "sneaky"

    target = Target()
    target.sneaky = expose(sneaky)  # type: ignore[attr-defined]
    with pytest.raises(MethodNotFound):
        resolve(target, "sneaky")


def test_subclass_replacing_an_exposed_method_with_data_is_not_resolvable() -> None:
    class Shadow(Target):
        say = "just data"  # type: ignore[assignment]

    with pytest.raises(MethodNotFound):
        resolve(Shadow(), "say")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([], {}),
        (["a", "b"], {}),
        (["a"], {"nope": 1}),
        (["a", True], {}),
        ([], {"text": "a", "loud": True, "extra": 1}),
        (["a"], {"text": "b"}),
    ],
    ids=["missing", "too-many", "unknown-kw", "kw-only-as-positional", "extra-kw", "twice"],
)
def test_bind_refuses_arguments_that_do_not_fit(args: list[Any], kwargs: dict[str, Any]) -> None:
    target = Target()
    with pytest.raises(BadArguments) as info:
        bind(resolve(target, "say"), args, kwargs)
    assert info.value.code == "bad-arguments"
    assert info.value.status_code == 400
    assert target.ran == []


@pytest.mark.parametrize(
    ("args", "kwargs"), [(["a"], {}), ([], {"text": "a"}), (["a"], {"loud": True})]
)
def test_bind_accepts_arguments_that_fit(args: list[Any], kwargs: dict[str, Any]) -> None:
    bind(resolve(Target(), "say"), args, kwargs)


class Typed:
    @expose
    def typed(
        self,
        count: int,
        ratio: float = 1.0,
        flag: bool = False,
        # bind() evaluates these hints at runtime: no "X | None" on Python 3.9.
        name: Optional[str] = None,  # noqa: UP045
        tags: Optional[list[str]] = None,  # noqa: UP045
        extra: Optional[dict[str, int]] = None,  # noqa: UP045
        anything: Any = None,
    ) -> None: ...


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": "1"},
        {"count": True},
        {"count": 1.5},
        {"count": 1, "ratio": "x"},
        {"count": 1, "flag": 1},
        {"count": 1, "name": 5},
        {"count": 1, "tags": ["a", 1]},
        {"count": 1, "tags": "a"},
        {"count": 1, "extra": {"a": "1"}},
    ],
    ids=repr,
)
def test_bind_refuses_values_that_contradict_json_type_hints(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BadArguments):
        bind(resolve(Typed(), "typed"), [], kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 1},
        {"count": 1, "ratio": 2},
        {"count": 1, "name": None, "tags": [], "extra": {"a": 1}},
        {"count": 1, "anything": {"x": [1, "y", None]}},
    ],
    ids=repr,
)
def test_bind_accepts_values_that_fit_json_type_hints(kwargs: dict[str, Any]) -> None:
    bind(resolve(Typed(), "typed"), [], kwargs)
