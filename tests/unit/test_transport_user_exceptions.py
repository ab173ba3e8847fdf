"""An exposed method that raises: logged with traceback, generic answer, page lives on."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena import expose
from flask_athena.testing import AthenaClient

from .widgets import Recorder, element


class Sloppy(Recorder):
    js_class = "Test.Sloppy"

    @expose
    def unserializable(self) -> Any:
        self._note("unserializable")
        return object()


def fail_once(make_app: Callable[..., Flask], debug: bool) -> tuple[int, dict[str, Any]]:
    page = AthenaClient(make_app(lambda: [Recorder()], debug=debug)).open()
    status, body = page.send({"type": "call", "widget": 1, "method": "fail"})
    assert element(page).invocations == [("fail", (), {})]
    assert page.call(1, "echo", "still alive") == "still alive"
    return status, body


def test_user_exception_is_200_with_a_generic_remote_error(
    make_app: Callable[..., Flask],
) -> None:
    status, body = fail_once(make_app, debug=False)
    assert status == 200
    assert body == {
        "results": [
            {
                "seq": 1,
                "error": {
                    "code": "remote-error",
                    "message": "The remote method raised an error.",
                    "name": "RemoteError",
                },
            }
        ]
    }


def test_debug_mode_adds_the_exception_type_and_message(make_app: Callable[..., Flask]) -> None:
    status, body = fail_once(make_app, debug=True)
    assert status == 200
    error = body["results"][0]["error"]
    assert error["code"] == "remote-error"
    assert error["message"] == "ValueError: secret detail 42"
    assert "Traceback" not in error["message"]


def test_user_exception_is_logged_with_its_traceback(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="flask_athena"):
        fail_once(make_app, debug=False)
    [record] = [r for r in caplog.records if r.name == "flask_athena"]
    assert record.exc_info is not None and record.exc_info[0] is ValueError
    assert "'fail'" in record.getMessage()
    assert "Traceback" in caplog.text and "secret detail 42" in caplog.text


def test_unserializable_return_value_is_a_remote_error(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    page = AthenaClient(make_app(lambda: [Sloppy()])).open()
    status, body = page.send({"type": "call", "widget": 1, "method": "unserializable"})
    assert status == 200
    assert body["results"][0]["error"]["code"] == "remote-error"
    assert "not JSON serializable" in caplog.text
    assert page.call(1, "echo", 2) == 2
