"""Unknown page, widget or method; bad arguments; malformed bodies: exact status, nothing ran."""

from __future__ import annotations

import json
from typing import Callable

import pytest
from flask import Flask

from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, call_body, element, post_headers


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()])


@pytest.fixture
def page(app: Flask) -> TestPage:
    return AthenaClient(app).open()


def test_unknown_page_is_404_page_not_found(page: TestPage) -> None:
    status, body = page.post(call_body(1, "echo", 1), path="/_athena/no-such-page/calls")
    assert status == 404
    assert body == {"error": {"code": "page-not-found", "message": "No such page."}}
    assert element(page).invocations == []


def test_unknown_widget_is_404_widget_not_found(page: TestPage) -> None:
    status, body = page.post(call_body(1, "echo", 1, widget=42))
    assert status == 404
    assert body == {
        "results": [
            {
                "seq": 1,
                "error": {
                    "code": "widget-not-found",
                    "message": "No such widget on this page.",
                    "name": "WidgetNotFound",
                },
            }
        ]
    }
    assert element(page).invocations == []


METHOD_NOT_FOUND = {
    "results": [
        {
            "seq": 1,
            "error": {
                "code": "method-not-found",
                "message": "No such exposed method.",
                "name": "MethodNotFound",
            },
        }
    ]
}


@pytest.mark.parametrize(
    "method",
    [
        "missing",
        "helper",
        "_private",
        "_note",
        "__init__",
        "__class__",
        "__html__",
        "detach",
        "call_remote",
        "callRemote",
        "join",
        "add",
        "render",
        "invoked",
        "label",
    ],
)
def test_unreachable_method_is_404_with_one_body_for_all(page: TestPage, method: str) -> None:
    recorder = element(page)
    status, body = page.post(call_body(1, method))
    assert status == 404
    assert body == METHOD_NOT_FOUND
    assert recorder.invocations == []
    assert recorder.page is page.live and page.live.elements == {1: recorder}
    assert recorder.label == "r"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [([], {}), ([1, 2, 3], {}), ([1], {"nope": 2}), ([1, 2, 3], {"scale": 1})],
    ids=["missing", "too-many", "unknown-kw", "too-many-with-kw"],
)
def test_arguments_that_do_not_bind_are_400_bad_arguments(
    page: TestPage, args: list[object], kwargs: dict[str, object]
) -> None:
    status, body = page.post(call_body(1, "total", *args, **kwargs))
    assert status == 400
    [result] = body["results"]
    assert result["error"]["code"] == "bad-arguments"
    assert element(page).invocations == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"messages": {}}',
        b"",
        b'{"messages": [{"seq": 1, "type": "call", "widget": 1, "method": "echo", "args": "x"}]}',
    ],
    ids=["truncated", "text", "binary", "list", "messages-object", "empty", "bad-args-shape"],
)
def test_malformed_body_is_400_and_uses_no_seq(page: TestPage, raw: bytes) -> None:
    status, body = page.post(raw)
    assert status == 400
    assert body["error"]["code"] in ("bad-request", "bad-message")
    assert "results" not in body
    assert element(page).invocations == []
    assert page.post(call_body(1, "echo", "seq 1 is still free")) == (
        200,
        {"results": [{"seq": 1, "ok": "seq 1 is still free"}]},
    )


def test_widget_value_from_the_browser_is_400_bad_message(page: TestPage) -> None:
    status, body = page.post(call_body(1, "echo", {"$athena": "widget", "id": 1, "html": "<i>"}))
    assert (status, body["error"]["code"]) == (400, "bad-message")
    assert element(page).invocations == []


@pytest.mark.parametrize("depth", [33, 100, 100_000])
def test_deeply_nested_body_is_400_bad_request(page: TestPage, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    raw = json.dumps(call_body(1, "echo", "PLACEHOLDER")).replace('"PLACEHOLDER"', nested)
    status, body = page.post(raw)
    assert (status, body["error"]["code"]) == (400, "bad-request")
    assert element(page).invocations == []


@pytest.mark.parametrize(
    ("verb", "endpoint"),
    [
        ("get", "calls"),
        ("put", "calls"),
        ("delete", "calls"),
        ("patch", "calls"),
        ("get", "close"),
        ("put", "close"),
        ("post", "events"),
        ("delete", "events"),
    ],
)
def test_wrong_http_method_is_405_json(page: TestPage, verb: str, endpoint: str) -> None:
    response = getattr(page.client.flask, verb)(
        page.config[endpoint], headers=post_headers(page), data=json.dumps(call_body(1, "echo"))
    )
    assert response.status_code == 405
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "method-not-allowed"
    assert b"<html" not in response.data.lower()
    assert element(page).invocations == []


def test_regression_get_on_calls_answered_405_as_html(page: TestPage) -> None:
    # Routing errors never reach a blueprint's error handlers, so this used
    # to be Flask's HTML error page.
    response = page.client.flask.get(page.config["calls"])
    assert (response.status_code, response.mimetype) == (405, "application/json")


@pytest.mark.parametrize("method", ["OPTIONS", "TRACE", "PROPFIND", "MKCOL", "BREW"])
@pytest.mark.parametrize("endpoint", ["calls", "close", "events"])
def test_regression_options_trace_propfind_answered_html(
    page: TestPage, method: str, endpoint: str
) -> None:
    # Issue 13: methods outside the wrong-method rules' list got Flask's
    # HTML 405 (or OPTIONS an empty 200): every answer is JSON now.
    response = page.client.flask.open(
        page.config[endpoint], method=method, headers=post_headers(page)
    )
    assert response.status_code == 405
    assert response.headers["Allow"] == ("GET" if endpoint == "events" else "POST")
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "method-not-allowed"
    assert element(page).invocations == []
