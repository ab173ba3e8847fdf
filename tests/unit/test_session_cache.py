"""ATHENA_FAST_CALLS: cookies verified once, and the results lane.

Every scenario runs against two apps, one with ``ATHENA_FAST_CALLS`` (the
caching session interface and the results lane) and one without, and the
answers (status, JSON body, content type) must be equal. Then what exposed
methods can use (session read and write, ``g``, ``request``, ``url_for``),
the app hooks that run, expiry and key changes, and when the lane steps aside.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Callable

import pytest
from flask import Flask, g, request, session, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_athena import LiveElement, expose
from flask_athena import sessions as sessions_module
from flask_athena.config import AthenaConfig, config_from_env
from flask_athena.errors import ConfigurationError
from flask_athena.sessions import CachingSessionInterface
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, call_body, element, post_headers


class Sessionful(LiveElement):
    js_class = "Test.Sessionful"

    @expose
    def remember(self, name: str) -> str:
        session["name"] = name
        return name

    @expose
    def recall(self) -> Any:
        return session.get("name")

    @expose
    def forget(self) -> None:
        session.clear()

    @expose
    def keep(self) -> None:
        session.permanent = True

    @expose
    def context(self) -> dict[str, Any]:
        g.seen = True
        return {
            "path": request.path,
            "endpoint": request.endpoint,
            "blueprint": request.blueprint,
            "url": url_for("athena.module_file", name="x"),
            "relative": url_for(".module_file", name="y"),
            "g": g.get("from_hook"),
        }


def open_page(
    make_app: Callable[..., Flask],
    fast: bool,
    setup: Callable[[Flask], Any] | None = None,
    **config: Any,
) -> TestPage:
    app = make_app(
        lambda: [Recorder(), Sessionful()],
        ATHENA_FAST_CALLS=fast,
        ATHENA_MAX_BODY_SIZE=4096,
        **config,
    )
    assert isinstance(app.session_interface, CachingSessionInterface) is fast
    if setup is not None:
        setup(app)
    return AthenaClient(app).open()


def answer(page: TestPage, data: Any, **headers: str | None) -> tuple[int, Any, str]:
    sent: dict[str, str] = post_headers(page)
    for key, value in headers.items():
        key = key.replace("_", "-")
        if value is None:
            sent.pop(key, None)
        else:
            sent[key] = value
    body = data if isinstance(data, (bytes, str)) else json.dumps(data)
    response = page.client.flask.post(page.config["calls"], data=body, headers=sent)
    return response.status_code, response.get_json(silent=True), response.mimetype


SCENARIOS: dict[str, tuple[Any, dict[str, str | None]]] = {
    "call": (call_body(1, "echo", "hi"), {}),
    "two calls": (
        {
            "messages": [
                call_body(1, "echo", 1)["messages"][0],
                call_body(2, "total", 2, 3)["messages"][0],
            ]
        },
        {},
    ),
    "results only": ({"ack": 0, "messages": [{"type": "result", "call": 9, "ok": 1}]}, {}),
    "empty": ({}, {}),
    "bad arguments": (call_body(1, "total", "x"), {}),
    "missing method": (call_body(1, "nope"), {}),
    "private method": (call_body(1, "_private"), {}),
    "unknown widget": (call_body(1, "echo", widget=99), {}),
    "user exception": (call_body(1, "fail"), {}),
    "sequence gap": (call_body(5, "echo"), {}),
    "bad json": (b"{nope", {}),
    "reserved key": ({"messages": [], "x": {"$athena": "widget"}}, {}),
    "too deep": ({"messages": [], "x": json.loads("[" * 40 + "]" * 40)}, {}),
    "not an object": ([1, 2], {}),
    "bad message": ({"messages": [{"type": "what"}]}, {}),
    "cross origin": (call_body(1, "echo"), {"Origin": "http://evil.example"}),
    "no origin": (call_body(1, "echo"), {"Origin": None}),
    "sec-fetch-site": (call_body(1, "echo"), {"Origin": None, "Sec-Fetch-Site": "same-origin"}),
    "wrong token": (call_body(1, "echo"), {"X-Athena-Token": "nope"}),
    "no token": (call_body(1, "echo"), {"X-Athena-Token": None}),
    "text/plain": (call_body(1, "echo"), {"Content-Type": "text/plain"}),
    "too large": ({"messages": [], "pad": "x" * 5000}, {}),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_cached_sessions_answer_like_flask_sessions(
    make_app: Callable[..., Flask], name: str
) -> None:
    data, headers = SCENARIOS[name]
    answers = []
    for fast in (True, False):
        page = open_page(make_app, fast)
        answers.append(answer(page, data, **headers))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("fast", [True, False])
def test_unknown_page_and_foreign_session(make_app: Callable[..., Flask], fast: bool) -> None:
    page = open_page(make_app, fast)
    flask = page.client.flask
    prefix = flask.application.config["ATHENA_URL_PREFIX"]
    response = flask.post(
        f"{prefix}/nope/calls", data=json.dumps(call_body(1, "echo")), headers=post_headers(page)
    )
    assert (response.status_code, response.get_json()["error"]["code"]) == (404, "page-not-found")
    other = flask.application.test_client()  # another browser: no session cookie
    response = other.post(
        page.config["calls"], data=json.dumps(call_body(1, "echo")), headers=post_headers(page)
    )
    assert (response.status_code, response.get_json()["error"]["code"]) == (403, "forbidden")


def test_session_written_by_an_exposed_method_reaches_the_browser(
    make_app: Callable[..., Flask],
) -> None:
    page = open_page(make_app, True)
    response = page.client.flask.post(
        page.config["calls"],
        data=json.dumps(call_body(1, "remember", "alice", widget=2)),
        headers=post_headers(page),
    )
    assert response.status_code == 200
    assert "session=" in response.headers["Set-Cookie"]
    assert response.headers["Vary"] == "Cookie"
    assert page.call(2, "recall") == "alice"
    # The cookie did not change: no Set-Cookie, still Vary: Cookie.
    response = page.client.flask.post(
        page.config["calls"],
        data=json.dumps(call_body(page.next_seq, "recall", widget=2)),
        headers=post_headers(page),
    )
    assert response.get_json() == {"results": [{"seq": page.next_seq, "ok": "alice"}]}
    assert "Set-Cookie" not in response.headers
    assert response.headers["Vary"] == "Cookie"


def session_headers(page: TestPage, method: str, *args: Any) -> tuple[bool, bool, str | None]:
    """Whether the calls POST set a cookie, deleted it, and its ``Vary``."""
    response = page.client.flask.post(
        page.config["calls"],
        data=json.dumps(call_body(page.next_seq, method, *args, widget=2)),
        headers=post_headers(page),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    page.next_seq += 1
    cookies = response.headers.getlist("Set-Cookie")
    deleted = any("Expires=Thu, 01 Jan 1970" in c for c in cookies)
    return bool(cookies) and not deleted, deleted, response.headers.get("Vary")


@pytest.mark.parametrize("refresh", [True, False])
def test_cached_sessions_save_like_flask_sessions(
    make_app: Callable[..., Flask], refresh: bool
) -> None:
    """Set, refresh, keep and delete the cookie exactly when Flask's interface does."""
    steps = [
        ("recall",),  # untouched: no cookie, Vary: Cookie
        ("remember", "alice"),  # written: a cookie
        ("keep",),  # made permanent: a cookie
        ("recall",),  # permanent, untouched: refreshed only with SESSION_REFRESH_EACH_REQUEST
        ("forget",),  # emptied (the page's binding too: the last call): the cookie is deleted
    ]
    seen = []
    for fast in (True, False):
        page = open_page(make_app, fast, None, SESSION_REFRESH_EACH_REQUEST=refresh)
        page.next_seq = 1
        seen.append([session_headers(page, *step) for step in steps])
    assert seen[0] == seen[1]
    assert [set_ for set_, _, _ in seen[0]] == [False, True, True, refresh, False]
    assert [deleted for _, deleted, _ in seen[0]] == [False, False, False, False, True]
    # Vary: Cookie on every answer that read the session; Flask before 3.0
    # sends none with the deletion (the last step): the comparison with
    # Flask's own interface above covers that step in both versions.
    assert {vary for _, _, vary in seen[0][:-1]} == {"Cookie"}


def test_request_context_of_an_exposed_method(make_app: Callable[..., Flask]) -> None:
    page = open_page(make_app, True)
    got = page.call(2, "context")
    prefix = page.client.flask.application.config["ATHENA_URL_PREFIX"]
    assert got == {
        "path": page.config["calls"],
        "endpoint": "athena.calls",
        "blueprint": "athena",
        "url": f"{prefix}/modules/x.js",
        "relative": f"{prefix}/modules/y.js",
        "g": None,
    }


def test_after_request_and_teardown_hooks_run_for_calls(make_app: Callable[..., Flask]) -> None:
    seen: list[str] = []

    def setup(app: Flask) -> None:
        @app.after_request
        def after(response: Any) -> Any:
            seen.append("after")
            response.headers["X-After"] = "1"
            return response

        @app.teardown_request
        def teardown(exc: BaseException | None) -> None:
            seen.append("teardown")

    page = open_page(make_app, True, setup)
    app = page.client.flask.application
    seen.clear()  # the page's own GET
    response = page.client.flask.post(
        page.config["calls"], data=json.dumps(call_body(1, "echo", 1)), headers=post_headers(page)
    )
    assert response.headers["X-After"] == "1"
    assert seen == ["after", "teardown"]
    assert isinstance(app.session_interface, CachingSessionInterface)


def test_before_request_hook_runs_before_exposed_methods(make_app: Callable[..., Flask]) -> None:
    def setup(app: Flask) -> None:
        @app.before_request
        def before() -> None:
            g.from_hook = "set"

    page = open_page(make_app, True, setup)
    assert page.call(2, "context")["g"] == "set"


def test_results_only_posts_skip_the_request_context(make_app: Callable[..., Flask]) -> None:
    seen: list[str] = []
    page = open_page(make_app, True, lambda app: app.teardown_request(lambda e: seen.append("t")))
    seen.clear()
    status, body = page.send({"type": "result", "call": 1, "ok": None}, ack=0)
    assert (status, body, seen) == (200, {"results": []}, [])
    assert page.call(1, "echo", 3) == 3
    assert seen == ["t"]


def spy_on_view(page: TestPage) -> list[str]:
    app = page.client.flask.application
    called: list[str] = []
    view = app.view_functions["athena.calls"]
    app.view_functions["athena.calls"] = lambda **kw: called.append("view") or view(**kw)
    return called


def test_the_lane_answers_results_and_the_view_answers_calls(
    make_app: Callable[..., Flask],
) -> None:
    page = open_page(make_app, True)
    called = spy_on_view(page)
    assert page.send({"type": "result", "call": 1, "ok": None}, ack=0)[0] == 200
    assert called == []
    assert page.call(1, "echo", 5) == 5
    assert called == ["view"]
    assert element(page).invoked("echo") == 1


@pytest.mark.parametrize(
    "headers",
    [{"X-Athena-Token": "nope"}, {"Origin": "http://evil.example"}, {"Content-Type": "text/plain"}],
)
def test_the_lane_hands_refused_posts_to_the_view(
    make_app: Callable[..., Flask], headers: dict[str, str]
) -> None:
    page = open_page(make_app, True)
    called = spy_on_view(page)
    status, body = page.post(
        {"ack": 0, "messages": [{"type": "result", "call": 1, "ok": 1}]}, headers
    )
    assert called == ["view"]  # the one place that answers refusals
    assert status in (403, 415) and "error" in body


def test_the_lane_steps_aside_for_before_request_hooks(make_app: Callable[..., Flask]) -> None:
    seen: list[str] = []
    page = open_page(make_app, True, lambda app: app.before_request(lambda: seen.append("b")))
    seen.clear()
    assert page.send({"type": "result", "call": 1, "ok": None}, ack=0)[0] == 200
    assert seen == ["b"]


def test_the_lane_is_not_installed_over_existing_middleware() -> None:
    from flask_athena import Athena
    from flask_athena.lane import ResultsLane

    app = Flask(__name__)
    app.secret_key = "k"
    app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    athena = Athena(app)
    assert isinstance(app.wsgi_app, ProxyFix)
    assert not isinstance(app.wsgi_app, ResultsLane)
    athena.shutdown(app)


def test_expired_session_cookie_is_refused_even_when_cached(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    page = open_page(make_app, True, None, PERMANENT_SESSION_LIFETIME=timedelta(seconds=100))
    assert page.call(1, "echo", 1) == 1  # the cookie is in the table now
    assert len(page.client.flask.application.session_interface) == 1  # type: ignore[arg-type]
    real = sessions_module.time.time
    monkeypatch.setattr(sessions_module.time, "time", lambda: real() + 1000)
    status, body = page.post(call_body(page.next_seq, "echo", 2))
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_secret_key_change_empties_the_table(make_app: Callable[..., Flask]) -> None:
    page = open_page(make_app, True)
    assert page.call(1, "echo", 1) == 1
    page.client.flask.application.secret_key = "another"
    status, body = page.post(call_body(page.next_seq, "echo", 2))
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_session_cache_keeps_only_scalar_sessions_and_is_bounded() -> None:
    app = Flask(__name__)
    app.secret_key = "k"
    serializer = app.session_interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    interface = CachingSessionInterface("/_athena/", size=2)
    kept = []
    for n, data in enumerate([{"a": 1}, {"a": [1]}, {"b": "x"}, {"c": None}]):
        cookie = serializer.dumps(data)
        with app.test_request_context("/_athena/p/calls", headers={"Cookie": f"session={cookie}"}):
            opened = interface.open_session(app, request)
            assert opened is not None and dict(opened) == data, n
            again = interface.open_session(app, request)
            assert again is not None and dict(again) == data
            assert again is not opened
            kept.append(len(interface))
    # The list-valued session was never kept; the table holds two at most.
    assert kept == [1, 1, 2, 2]


def test_views_of_the_app_use_flask_sessions_unchanged(make_app: Callable[..., Flask]) -> None:
    page = open_page(make_app, True)
    interface = page.client.flask.application.session_interface
    assert isinstance(interface, CachingSessionInterface)
    page.client.open("/")  # the app's own view, with the session cookie
    assert len(interface) == 0
    assert page.call(1, "echo", 1) == 1
    assert page.call(1, "echo", 2) == 2
    assert len(interface) == 1  # one cookie, verified once


def test_session_from_the_table_is_a_copy(make_app: Callable[..., Flask]) -> None:
    page = open_page(make_app, True)
    page.call(2, "remember", "alice")
    page.call(2, "remember", "bob")
    assert page.call(2, "recall") == "bob"


def test_cookies_cached_behind_middleware_added_before_init_app() -> None:
    from flask_athena import Athena

    app = Flask(__name__)
    app.secret_key = "k"
    app.wsgi_app = ProxyFix(app.wsgi_app)  # type: ignore[method-assign]
    athena = Athena(app)
    assert isinstance(app.session_interface, CachingSessionInterface)
    athena.shutdown(app)


def test_a_custom_session_interface_is_kept() -> None:
    from flask.sessions import SecureCookieSessionInterface

    from flask_athena import Athena

    class Mine(SecureCookieSessionInterface):
        pass

    app = Flask(__name__)
    app.secret_key = "k"
    app.session_interface = Mine()
    athena = Athena(app)
    assert type(app.session_interface) is Mine
    athena.shutdown(app)


def test_server_name_and_trusted_hosts_go_through_flask(make_app: Callable[..., Flask]) -> None:
    page = open_page(make_app, True, None, TRUSTED_HOSTS=["localhost"])
    called = spy_on_view(page)
    assert page.send({"type": "result", "call": 1, "ok": None}, ack=0)[0] == 200
    assert called == ["view"]
    page.client.flask.application.config["TRUSTED_HOSTS"] = None
    assert page.send({"type": "result", "call": 1, "ok": None}, ack=0)[0] == 200
    assert called == ["view"]
    page.client.flask.application.config["SERVER_NAME"] = "localhost"
    assert page.send({"type": "result", "call": 1, "ok": None}, ack=0)[0] == 200
    assert called == ["view", "view"]


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("true", True), ("0", False), ("off", False)]
)
def test_fast_calls_from_env(raw: str, value: bool) -> None:
    from flask_athena.config import DEFAULTS

    config = {f"ATHENA_{k}": v for k, v in DEFAULTS.items()}
    config.update(config_from_env({"ATHENA_FAST_CALLS": raw}))
    assert AthenaConfig.from_mapping(config).fast_calls is value


def test_fast_calls_must_be_a_bool() -> None:
    from flask_athena.config import DEFAULTS

    config = {f"ATHENA_{k}": v for k, v in DEFAULTS.items()}
    config["ATHENA_FAST_CALLS"] = "maybe"
    with pytest.raises(ConfigurationError, match="ATHENA_FAST_CALLS"):
        AthenaConfig.from_mapping(config)


def test_flask_max_content_length_answers_alike(make_app: Callable[..., Flask]) -> None:
    answers = []
    for fast in (True, False):
        page = open_page(make_app, fast, None, MAX_CONTENT_LENGTH=150)
        answers.append(answer(page, {"messages": [], "pad": "x" * 200}))
        answers.append(answer(page, call_body(1, "echo", "ok")))
    assert answers[0] == answers[2]
    assert answers[1] == answers[3]
    assert answers[0][0] == 413 and answers[1][0] == 200
