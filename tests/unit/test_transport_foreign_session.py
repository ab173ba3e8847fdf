"""Another session holding a page's id (and even its token) gets 403 and touches nothing."""

from __future__ import annotations

from typing import Callable

import pytest
from flask import Flask

from flask_athena.testing import AthenaClient, TestPage

from .widgets import ORIGIN, Recorder, call_body, element, post_headers


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()])


@pytest.fixture
def owner(app: Flask) -> TestPage:
    page = AthenaClient(app).open()
    element(page).call_remote("hear", "queued before the attack")
    return page


@pytest.fixture
def intruder(app: Flask) -> AthenaClient:
    """A second browser: its own session (it opened a page of its own)."""
    client = AthenaClient(app)
    client.open()
    return client


def test_calls_with_the_stolen_id_and_token_are_403(
    owner: TestPage, intruder: AthenaClient
) -> None:
    response = intruder.flask.post(
        owner.config["calls"], json=call_body(1, "echo", "pwned"), headers=post_headers(owner)
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert element(owner).invocations == []
    assert owner.live.sequencer.expected == 1


def test_results_and_acks_from_another_session_are_refused(
    owner: TestPage, intruder: AthenaClient
) -> None:
    [message] = owner.received()
    body = {"ack": 1, "messages": [{"type": "result", "call": message["call"], "ok": "forged"}]}
    response = intruder.flask.post(owner.config["calls"], json=body, headers=post_headers(owner))
    assert response.status_code == 403
    assert owner.live.pending_calls  # the forged answer did not settle the call
    assert len(owner.live.outbox) == 1  # the forged ack trimmed nothing


def test_event_stream_of_another_session_is_403(owner: TestPage, intruder: AthenaClient) -> None:
    response = intruder.flask.get(owner.config["events"])
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert not owner.live.was_connected
    assert len(owner.live.outbox) == 1


def test_close_from_another_session_is_403(owner: TestPage, intruder: AthenaClient) -> None:
    response = intruder.flask.post(
        owner.config["close"], json={"token": owner.config["token"]}, headers={"Origin": ORIGIN}
    )
    assert response.status_code == 403
    assert not owner.live.closed


def test_client_without_any_session_is_403(app: Flask, owner: TestPage) -> None:
    stranger = app.test_client()
    assert (
        stranger.post(
            owner.config["calls"], json=call_body(1, "echo", 1), headers=post_headers(owner)
        ).status_code
        == 403
    )
    assert stranger.get(owner.config["events"]).status_code == 403


def test_page_still_works_for_its_owner_after_an_attack(
    owner: TestPage, intruder: AthenaClient
) -> None:
    for _ in range(3):
        intruder.flask.post(
            owner.config["calls"], json=call_body(1, "echo", 1), headers=post_headers(owner)
        )
        intruder.flask.get(owner.config["events"])
    assert owner.call(1, "echo", "still mine") == "still mine"
    [message] = owner.received()
    assert message["args"] == ["queued before the attack"]
    assert element(owner).invocations == [("echo", ("still mine",), {})]
