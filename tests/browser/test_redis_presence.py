""" "Here now" across two Redis-backed hosts, in real Chromium (issue 17).

The example app runs as two gunicorn processes ("hosts") sharing one
``redis-server``; alice's browser talks only to host A, bob's only to host B,
so every join and leave they see crossed hosts through Redis presence.
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

PEOPLE = ".people li"
ANNOUNCE = ".messages li.announce"


@pytest.fixture(scope="module")
def hosts() -> Iterator[tuple[LiveServer, LiveServer]]:
    redis = RedisServer().start()
    env = {
        "ATHENA_BROKER_URL": redis.url,
        "SECRET_KEY": "browser-redis-presence",
        # A tab whose close beacon is lost still leaves within seconds.
        "ATHENA_PAGE_TIMEOUT": "10",
    }
    started: list[LiveServer] = []
    try:
        for name in ("host-a", "host-b"):
            server = LiveServer(
                EXAMPLE_APP, f"browser-presence-{name}", env=env, extra_args=GUNICORN_ARGS
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


def test_here_now_across_hosts_one_entry_per_user_and_leaves(
    hosts: tuple[LiveServer, LiveServer], new_context: ContextFactory
) -> None:
    host_a, host_b = hosts
    alice_context = new_context()
    bob_context = new_context()
    alice = enter(alice_context, host_a.url, "alice")
    bob = enter(bob_context, host_b.url, "bob")
    for user in (alice, bob):
        expect(user.page.locator(PEOPLE)).to_have_text(["alice", "bob"], timeout=15_000)
    expect(alice.page.locator(ANNOUNCE).last).to_have_text("bob joined the room")

    # alice opens a second tab (same session: she is back in at once):
    # still one "alice" in everybody's list, and nobody is told she joined.
    second = open_live(alice_context, host_a.url + "/chat")
    expect(second.page.locator(PEOPLE)).to_have_text(["alice", "bob"], timeout=15_000)
    # carol enters later: everyone gets presence changes in one order, so
    # once bob sees carol he has seen the second tab's join too.
    carol = enter(new_context(), host_b.url, "carol")
    for user in (alice, bob, carol, second):
        expect(user.page.locator(PEOPLE)).to_have_text(["alice", "bob", "carol"], timeout=15_000)
    expect(bob.page.locator(ANNOUNCE)).to_have_text(
        ["bob joined the room", "carol joined the room"]
    )
    screenshot(bob.page, "redis_presence_bob_host_b")
    second.page.close()

    # bob closes his browser: he leaves alice's list, announced once.
    bob_context.close()
    expect(alice.page.locator(PEOPLE)).to_have_text(["alice", "carol"], timeout=30_000)
    expect(alice.page.locator(ANNOUNCE, has_text="bob left the room")).to_have_count(1)
    screenshot(alice.page, "redis_presence_alice_host_a")
    assert not alice.errors, alice.errors
