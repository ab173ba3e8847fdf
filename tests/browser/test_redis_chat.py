"""Two users on different workers chat through Redis, in real Chromium.

The example app runs as two gunicorn processes (two "hosts", one gevent
worker each) sharing one ``redis-server`` and one ``SECRET_KEY``; alice's
browser only ever talks to the first, bob's to the second, so every message
crosses workers through the Redis broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import EXAMPLE_APP, GUNICORN_ARGS, ContextFactory
from tests.browser.helpers import LivePageHandle, expect, open_live, screenshot
from tests.integration.redis_support import RedisServer
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[LiveServer, LiveServer]]:
    redis = RedisServer().start()
    env = {"ATHENA_BROKER_URL": redis.url, "SECRET_KEY": "browser-redis-chat"}
    started: list[LiveServer] = []
    try:
        for name in ("host-a", "host-b"):
            server = LiveServer(
                EXAMPLE_APP, f"browser-redis-{name}", env=env, extra_args=GUNICORN_ARGS
            )
            started.append(server)
            server.start()
        yield started[0], started[1]
    finally:
        for server in started:
            server.stop()
        redis.stop()


def enter(context: Any, url: str, name: str) -> LivePageHandle:
    user = open_live(context, url + "/chat")
    user.page.get_by_label("Your name").fill(name)
    user.page.get_by_role("button", name="Enter the room").click()
    expect(user.page.locator(".room")).to_be_visible()
    return user


def say(user: LivePageHandle, text: str) -> None:
    box = user.page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def test_two_users_on_different_workers_chat_through_redis(
    hosts: tuple[LiveServer, LiveServer], new_context: ContextFactory
) -> None:
    host_a, host_b = hosts
    alice = enter(new_context(), host_a.url, "alice")
    bob = enter(new_context(), host_b.url, "bob")
    # bob's arrival crossed from host B's worker to alice on host A.
    expect(alice.page.locator(".messages li.announce").last).to_have_text("bob joined the room")

    script = [
        (alice, "alice", "Hello from host A"),
        (bob, "bob", "Hello from host B"),
        (alice, "alice", "Messages cross workers through Redis"),
        (bob, "bob", "Exactly once, in order"),
    ]
    expected: list[str] = []
    for user, name, text in script:
        say(user, text)
        expected.append(f"{name}: {text}")
        for reader in (alice, bob):
            expect(reader.page.locator(MESSAGES)).to_have_text(expected)

    screenshot(alice.page, "redis_chat_alice_host_a")
    screenshot(bob.page, "redis_chat_bob_host_b")
    assert not alice.errors and not bob.errors, (alice.errors, bob.errors)
