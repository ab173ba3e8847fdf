"""POST bodies: read within ATHENA_BODY_TIMEOUT; broken bodies are 400s (issue 13)."""

from __future__ import annotations

import io
import json
from typing import Any, Callable

import gevent
import pytest
from flask import Flask

from flask_athena.errors import BodyTimeout, BodyTooLarge, UnreadableBody
from flask_athena.limits import read_body
from flask_athena.testing import AthenaClient

from .widgets import Recorder, call_body, element, post_headers


class Trickle(io.RawIOBase):
    """A body that sends a byte, then stalls (a client slower than its Content-Length)."""

    def __init__(self, stall: float = 30.0) -> None:
        self.stall = stall
        self.sent = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self.sent:
            self.sent = True
            buffer[0:1] = b"{"
            return 1
        gevent.sleep(self.stall)
        return 0


class Broken(io.RawIOBase):
    """What a WSGI server's input does on a malformed chunked body."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        raise ValueError("Invalid chunk size: 'zz'")  # gunicorn's InvalidChunkSize is no OSError


def test_a_body_slower_than_the_deadline_is_a_body_timeout() -> None:
    # What broke: the read had no deadline; the greenlet waited forever.
    with pytest.raises(BodyTimeout):
        read_body(io.BufferedReader(Trickle()), 4096, timeout=0.05)


def test_an_unreadable_body_is_a_400_not_a_500() -> None:
    with pytest.raises(UnreadableBody) as raised:
        read_body(io.BufferedReader(Broken()), 4096, timeout=5)
    assert (raised.value.status_code, raised.value.code) == (400, "bad-request")


def test_a_reset_mid_body_is_a_400() -> None:
    class Reset(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            raise ConnectionResetError()

    with pytest.raises(UnreadableBody):
        read_body(io.BufferedReader(Reset()), 4096, timeout=5)


def test_someone_elses_timeout_passes_through() -> None:
    # A gevent.Timeout of the caller's must not become a 408.
    with gevent.Timeout(0.05, False):
        read_body(io.BufferedReader(Trickle()), 4096, timeout=30)
        raise AssertionError("not reached")


def test_body_limits() -> None:
    assert read_body(io.BytesIO(b"x" * 10), 10, timeout=5) == b"x" * 10
    with pytest.raises(BodyTooLarge):
        read_body(io.BytesIO(b"x" * 11), 10, timeout=5)


@pytest.mark.parametrize(
    "stream, status, code",
    [(Trickle, 408, "body-timeout"), (Broken, 400, "bad-request")],
    ids=["slow-body", "broken-body"],
)
@pytest.mark.parametrize("endpoint", ["calls", "close"])
def test_slow_or_broken_bodies_through_the_endpoints(
    make_app: Callable[..., Flask], stream: Any, status: int, code: str, endpoint: str
) -> None:
    app = make_app(lambda: [Recorder()], ATHENA_BODY_TIMEOUT=0.1)
    page = AthenaClient(app).open()
    response = page.client.flask.post(
        page.config[endpoint],
        headers=post_headers(page),
        environ_overrides={"wsgi.input": io.BufferedReader(stream()), "CONTENT_LENGTH": "100"},
    )
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    # Nothing ran and the page still works.
    assert element(page).invocations == []
    ok = page.client.flask.post(
        page.config["calls"],
        data=json.dumps(call_body(1, "echo", "hi")),
        headers=post_headers(page),
    )
    assert ok.get_json() == {"results": [{"seq": 1, "ok": "hi"}]}
