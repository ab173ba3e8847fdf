"""Athena(app) / init_app discipline, SECRET_KEY, and the tutorial's spellings."""

from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from flask_athena import Athena, LiveElement
from flask_athena.state import AthenaState
from flask_athena.testing import AthenaClient

from .widgets import Recorder, element


def test_second_init_app_on_one_app_raises() -> None:
    app = Flask(__name__)
    athena = Athena(app)
    with pytest.raises(RuntimeError, match="once"):
        athena.init_app(app)
    with pytest.raises(RuntimeError):
        Athena(app)
    athena.shutdown(app)


def test_deferred_init_app_works() -> None:
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "s"
    athena = Athena()
    athena.init_app(app)
    assert isinstance(app.extensions["athena"], AthenaState)
    assert app.extensions["athena"].athena is athena
    with app.app_context():
        assert athena.state() is app.extensions["athena"]
    athena.shutdown(app)


def test_one_athena_serves_two_apps_with_separate_state() -> None:
    athena = Athena()
    first, second = Flask("first"), Flask("second")
    first.config["ATHENA_OUTBOX_SIZE"] = 3
    athena.init_app(first)
    athena.init_app(second)
    assert athena.state(first) is not athena.state(second)
    assert athena.state(first).config.outbox_size == 3
    assert athena.state(second).config.outbox_size == 1000
    athena.shutdown(first)
    athena.shutdown(second)


def test_state_lives_only_in_app_extensions() -> None:
    app = Flask(__name__)
    before = set(vars(app))
    athena = Athena(app)
    # ATHENA_FAST_CALLS sets Flask's session_interface hook (a table of
    # verified cookies) and wraps wsgi_app in the results lane (a middleware
    # holds no state of its own); nothing else is set.
    assert set(vars(app)) - {"session_interface", "wsgi_app"} == before
    assert not any(value is athena for value in vars(app).values())
    assert list(app.extensions) == ["athena"]
    athena.shutdown(app)


def test_state_without_init_app_says_how_to_fix_it() -> None:
    app = Flask(__name__)
    with pytest.raises(RuntimeError, match="init_app"):
        Athena().state(app)
    with pytest.raises(RuntimeError, match="app context"):
        Athena().state()


def test_page_without_secret_key_names_secret_key(make_app: Callable[..., Flask]) -> None:
    app = make_app(SECRET_KEY=None)
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        app.test_client().get("/")


def test_page_outside_a_request_raises(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    athena = app.extensions["athena"].athena
    with app.app_context(), pytest.raises(RuntimeError, match="request"):
        athena.page()


def test_jsclass_is_an_alias_of_js_class() -> None:
    class ChatterBox(LiveElement):
        jsClass = "ChatThing.ChatterBox"

    assert ChatterBox.js_class == "ChatThing.ChatterBox"


def test_js_class_set_explicitly_wins_over_jsclass() -> None:
    class Both(LiveElement):
        js_class = "A.Real"
        jsClass = "B.Ignored"

    assert Both.js_class == "A.Real"


@pytest.mark.parametrize("name", ["ChatterBox", "ChatterBox.", ".ChatterBox", "..."])
def test_js_class_without_module_raises_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="Module.Class"):
        type("Bad", (LiveElement,), {"js_class": name})


def test_jsclass_without_module_raises_value_error_too() -> None:
    with pytest.raises(ValueError):
        type("Bad", (LiveElement,), {"jsClass": "NoDot"})


def test_element_without_js_class_cannot_join_a_page(make_app: Callable[..., Flask]) -> None:
    class Bare(LiveElement):
        pass

    app = make_app(lambda: [Bare()])
    with pytest.raises(ValueError, match="js_class"):
        app.test_client().get("/")


def test_callremote_is_an_alias_of_call_remote(make_app: Callable[..., Flask]) -> None:
    assert LiveElement.callRemote is LiveElement.call_remote
    page = AthenaClient(make_app(lambda: [Recorder()])).open()
    call = element(page).callRemote("hear", "bob", "hi")
    [message] = page.received()
    assert message == {
        "type": "call",
        "call": call.call_id,
        "widget": 1,
        "method": "hear",
        "args": ["bob", "hi"],
    }


def test_call_remote_before_the_element_is_on_a_page_raises() -> None:
    with pytest.raises(RuntimeError, match="add it first"):
        Recorder().call_remote("x")


def test_rendering_an_element_not_on_a_page_says_to_add_it() -> None:
    with pytest.raises(RuntimeError, match=r"page\.add"):
        Recorder().__html__()
