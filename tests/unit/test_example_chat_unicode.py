"""The example chat with a lone surrogate in a name or a message (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from example_app import create_app
from flask_athena.testing import AthenaClient

LONE = "\ud800"
FFFD = "\ufffd"


@pytest.fixture
def app() -> Iterator[Flask]:
    app = create_app({"TESTING": True})
    yield app
    app.extensions["athena"].shutdown()


def test_username_with_a_lone_surrogate_does_not_poison_the_chat(app: Flask) -> None:
    # What broke: the name was stored as it came; every later broadcast and
    # the attacker's own GET /chat (the name in its session) failed to encode.
    attacker = AthenaClient(app)
    page = attacker.open("/chat")
    page.call(1, "setUsername", f"eve{LONE}")
    page.call(1, "say", f"hi{LONE}")
    assert attacker.flask.get("/chat").status_code == 200  # the session's name renders
    visitor = AthenaClient(app).open("/chat")
    visitor.connect()
    visitor.call(1, "setUsername", "bob")
    visitor.call(1, "say", "hello")
    heard = [args for args in page.received_calls("hear")]
    assert heard == [[f"eve{FFFD}", f"hi{FFFD}"], ["bob", "hello"]]
