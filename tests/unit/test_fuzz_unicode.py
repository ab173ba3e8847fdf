"""Hypothesis over all of Unicode, surrogates and non-characters included (issue 13).

Strings are drawn from every code point, lone UTF-16 surrogates among them,
and sent the way a browser's ``JSON.stringify`` sends them (surrogates as
``\\u`` escapes). Stateful sequences open pages, call, reconnect and close
in any order. Always: no 5xx, every answer JSON, every frame the server
queued valid UTF-8 with ids 1, 2, 3... and nothing logged with a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, render_template_string
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from flask_athena import Athena
from flask_athena.protocol import valid_text
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder

#: Every code point, lone surrogates (Cs) and non-characters (U+FFFE, U+FDD0...)
#: included and drawn often. (``st.characters`` alone never yields a
#: surrogate: Hypothesis leaves out category Cs unless asked, and among 1.1
#: million code points the 2,048 surrogates would be rare anyway; ``st.text``
#: drops them too, hence lists of characters joined.)
any_char = st.one_of(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from(["\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0010ffff", "\x00", "\u2028"]),
)
any_text = st.lists(any_char, max_size=12).map("".join)
json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), any_text),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(any_text, children, max_size=3)
    ),
    max_leaves=6,
)


def valid_value(value: Any) -> Any:
    """``value`` as the server must see it: every string made valid."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [valid_value(v) for v in value]
    if isinstance(value, dict):
        return {valid_text(k): valid_value(v) for k, v in value.items()}
    return value


PAGE = "<html><head>{{ page.head() }}</head><body>{{ box }}</body></html>"


def make_app() -> Flask:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="fuzz", ATHENA_MAX_PAGES_PER_SESSION=4, ATHENA_OUTBOX_SIZE=64)
    athena = Athena(app)

    @app.get("/")
    def index() -> str:
        page = athena.page()
        box = page.add(Recorder())
        box.join("room")
        return render_template_string(PAGE, page=page, box=box)

    return app


class UnicodeStorm(RuleBasedStateMachine):
    """Pages of a few sessions opened, called, reconnected and closed in any order."""

    def __init__(self) -> None:
        super().__init__()
        self.app = make_app()
        self.athena: Athena = self.app.extensions["athena"].athena
        self.clients = [AthenaClient(self.app) for _ in range(2)]
        self.pages: list[TestPage] = []
        #: page id -> ids of the frames read so far
        self.seen: dict[str, int] = {}
        self.opened = False

    def teardown(self) -> None:
        for page in self.pages:
            page.disconnect()
        # The greenlet that serves every page of the worker (the reaper)
        # outlived the storm: no string killed it.
        state = self.app.extensions["athena"]
        assert state.reaper_running or not self.opened
        self.athena.shutdown(self.app)

    def check(self, response_status: int, body: Any) -> None:
        assert response_status < 500, body

    @precondition(lambda self: len(self.pages) < 6)
    @rule(which=st.integers(0, 1))
    def open_page(self, which: int) -> None:
        self.pages.append(self.clients[which].open())
        self.opened = True

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 5), value=json_like)
    def call(self, n: int, value: Any) -> None:
        page = self.pages[n % len(self.pages)]
        status, body = page.send(
            {"type": "call", "widget": 1, "method": "echo", "args": [value], "kwargs": {}}
        )
        self.check(status, body)
        if status == 200 and "ok" in body["results"][0]:
            assert body["results"][0]["ok"] == valid_value(value)

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 5), value=json_like)
    def server_calls(self, n: int, value: Any) -> None:
        page = self.pages[n % len(self.pages)]
        status, body = page.send(
            {"type": "call", "widget": 1, "method": "ping_back", "args": [value], "kwargs": {}}
        )
        self.check(status, body)

    @rule(value=any_text)
    def broadcast(self, value: str) -> None:
        with self.app.app_context():
            self.athena.broadcast("room", "hear", value, {value: [value]})

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 5))
    def reconnect(self, n: int) -> None:
        page = self.pages[n % len(self.pages)]
        if page.id in self.app.extensions["athena"].pages:
            page.connect()
            page.disconnect()

    @precondition(lambda self: bool(self.pages))
    @rule(n=st.integers(0, 5))
    def close(self, n: int) -> None:
        page = self.pages.pop(n % len(self.pages))
        assert page.close() == 204

    @invariant()
    def frames_are_utf8_with_consecutive_ids(self) -> None:
        for page in self.pages:
            live = self.app.extensions["athena"].pages.get(page.id)
            if live is None:
                continue  # evicted by the session limit
            frames = live.outbox.read(self.seen.get(page.id, 0))
            if frames is None:
                continue  # trimmed past what was read: the browser would get gone
            for frame in frames:
                head, _, data = frame.decode("utf-8").partition("\ndata: ")  # strict
                seq = int(head.removeprefix("id: "))
                assert seq == self.seen.get(page.id, 0) + 1
                self.seen[page.id] = seq
                json.loads(data)


@pytest.fixture
def no_tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level("ERROR", "flask_athena"):
        yield
    # ValueError("secret detail 42") is Recorder.fail, never called here.
    assert not [r for r in caplog.records if r.exc_info], caplog.text


def test_unicode_storm_of_open_call_reconnect_close(no_tracebacks: None) -> None:
    UnicodeStorm.TestCase.settings = settings(
        max_examples=25,
        stateful_step_count=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    UnicodeStorm.TestCase().runTest()
