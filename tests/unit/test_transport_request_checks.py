"""Content-Type, Origin, token and body-size checks: refused before anything runs."""

from __future__ import annotations

import io
import json
from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, call_body, element, post_headers

BODY = json.dumps(call_body(1, "echo", "hi"))
OK = {"results": [{"seq": 1, "ok": "hi"}]}


@pytest.fixture
def page(make_app: Callable[..., Flask]) -> TestPage:
    return AthenaClient(make_app(lambda: [Recorder()], ATHENA_MAX_BODY_SIZE=4096)).open()


def post(page: TestPage, headers: dict[str, str | None], data: Any = BODY, **kw: Any) -> Any:
    sent = post_headers(page)
    for key, value in headers.items():
        if value is None:
            sent.pop(key, None)
        else:
            sent[key] = value
    return page.client.flask.post(page.config["calls"], data=data, headers=sent, **kw)


def error_code(response: Any) -> str:
    code: str = response.get_json()["error"]["code"]
    return code


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/json",
    ],
)
def test_wrong_content_type_is_415(page: TestPage, content_type: str | None) -> None:
    response = post(page, {"Content-Type": content_type})
    assert (response.status_code, error_code(response)) == (415, "unsupported-media")
    assert element(page).invocations == []


def test_json_with_charset_is_accepted(page: TestPage) -> None:
    response = post(page, {"Content-Type": "application/json; charset=utf-8"})
    assert (response.status_code, response.get_json()) == (200, OK)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": None},
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost.evil.example"},
        {"Origin": "https://localhost"},
        {"Origin": "http://localhost:8080"},
        {"Origin": "null"},
        {"Origin": None, "Sec-Fetch-Site": "cross-site"},
        {"Origin": None, "Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
    ],
    ids=[
        "missing",
        "foreign",
        "suffix",
        "scheme",
        "port",
        "null",
        "cross-site",
        "same-site",
        "foreign-origin-wins",
    ],
)
def test_missing_or_foreign_origin_is_403(page: TestPage, headers: dict[str, str | None]) -> None:
    response = post(page, headers)
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert element(page).invocations == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": None, "Sec-Fetch-Site": "same-origin"},
        {"Origin": "http://localhost/"},
    ],
    ids=["sec-fetch-site", "trailing-slash"],
)
def test_same_origin_is_accepted(page: TestPage, headers: dict[str, str | None]) -> None:
    response = post(page, headers)
    assert (response.status_code, response.get_json()) == (200, OK)


def test_allowed_origins_admit_extra_origins(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_ALLOWED_ORIGINS=["https://app.example/"])
    page = AthenaClient(app).open()
    assert post(page, {"Origin": "https://app.example"}).status_code == 200
    refused = post(page, {"Origin": "https://other.example"})
    assert refused.status_code == 403
    assert element(page).invoked("echo") == 1


@pytest.mark.parametrize(
    "token", [None, "", "wrong", "x" * 1000, "é"], ids=["missing", "empty", "wrong", "long", "utf8"]
)
def test_missing_or_wrong_token_is_403(page: TestPage, token: str | None) -> None:
    response = post(page, {"X-Athena-Token": token})
    assert (response.status_code, error_code(response)) == (403, "forbidden")
    assert element(page).invocations == []


def test_token_of_another_page_of_the_same_session_is_403(page: TestPage) -> None:
    other = page.client.open()
    response = post(page, {"X-Athena-Token": other.config["token"]})
    assert response.status_code == 403
    assert element(page).invocations == [] and element(other).invocations == []


def test_body_of_exactly_the_limit_is_accepted(page: TestPage) -> None:
    padded = json.dumps(call_body(1, "echo", "hi")).rstrip("}") + " " * 4096
    padded = padded[: 4096 - 1] + "}"
    assert len(padded) == 4096
    assert post(page, {}, data=padded).status_code == 200


class CountingStream(io.BytesIO):
    """A request body that counts how much the server read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk


def test_oversize_body_with_content_length_is_413_before_reading(page: TestPage) -> None:
    stream = CountingStream(b"[" * 10_000_000)
    response = post(
        page, {}, data=None, input_stream=stream, environ_overrides={"CONTENT_LENGTH": "10000000"}
    )
    assert (response.status_code, error_code(response)) == (413, "body-too-large")
    assert stream.consumed == 0
    assert element(page).invocations == []


def test_oversize_chunked_body_is_413_after_reading_at_most_the_limit(page: TestPage) -> None:
    stream = CountingStream(b" " * 10_000_000)
    response = post(
        page,
        {"Transfer-Encoding": "chunked"},
        data=None,
        input_stream=stream,
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.request.content_length is None  # really no Content-Length
    assert (response.status_code, error_code(response)) == (413, "body-too-large")
    assert stream.consumed <= 4096 + 1
    assert element(page).invocations == []


def test_chunked_body_within_the_limit_is_accepted(page: TestPage) -> None:
    response = post(
        page,
        {"Transfer-Encoding": "chunked"},
        data=None,
        input_stream=io.BytesIO(BODY.encode()),
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert (response.status_code, response.get_json()) == (200, OK)


def test_close_checks_origin_and_token(page: TestPage) -> None:
    flask = page.client.flask
    close, token = page.config["close"], page.config["token"]
    assert flask.post(close, json={"token": token}).status_code == 403  # no Origin
    forged = flask.post(close, json={"token": "wrong"}, headers={"Origin": "http://localhost"})
    assert forged.status_code == 403
    no_token = flask.post(close, json=[token], headers={"Origin": "http://localhost"})
    assert no_token.status_code == 403
    assert not page.live.closed
    assert page.close() == 204


class _ResetMidBody(io.RawIOBase):
    """A request body whose connection is reset after the first bytes."""

    def __init__(self) -> None:
        self._sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._sent:
            raise ConnectionResetError("connection reset by peer")
        self._sent = True
        buffer[:1] = b"{"
        return 1


def test_regression_reset_while_reading_the_body_was_a_500_with_a_traceback(
    page: TestPage, caplog: pytest.LogCaptureFixture
) -> None:
    # A chunked body (no Content-Length): werkzeug reads the server's stream
    # directly, so the reset surfaces as an OSError in the view.
    response = post(
        page,
        {},
        data=None,
        environ_overrides={
            "wsgi.input": io.BufferedReader(_ResetMidBody()),
            "wsgi.input_terminated": True,
            "CONTENT_LENGTH": "",
        },
    )
    assert (response.status_code, error_code(response)) == (400, "bad-request")
    assert element(page).invocations == []
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
