"""The example app's chat room with two real users, each in a browser context of their own.

The app runs as users deploy it: ``gunicorn -k gevent -w 1
'example_app:create_app()'``. Its heartbeat is set to 60 s here, so a user
who leaves within a test's few seconds can only have been noticed through
the ``sendBeacon`` close on ``pagehide`` (the server sees a dead stream only
when it writes to it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from tests.browser.conftest import EXAMPLE_APP, ContextFactory, start_server
from tests.browser.helpers import LivePageHandle, expect, open_live, screenshot
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(EXAMPLE_APP, "example-chat", heartbeat=60, page_timeout=120)
    yield server
    server.stop()


Enter = Callable[[str], tuple[Any, LivePageHandle]]


@pytest.fixture
def enter(server: LiveServer, new_context: ContextFactory) -> Iterator[Enter]:
    """``enter(name)``: a new user (browser context) opens /chat and picks ``name``."""
    handles: list[LivePageHandle] = []

    def factory(name: str) -> tuple[Any, LivePageHandle]:
        context = new_context()
        user = open_live(context, server.url + "/chat")
        user.page.get_by_label("Your name").fill(name)
        user.page.get_by_role("button", name="Enter the room").click()
        expect(user.page.locator(".room")).to_be_visible()
        expect(user.page.locator(".name-form")).to_be_hidden()
        handles.append(user)
        return context, user

    yield factory
    for user in handles:
        assert not user.errors, user.errors


def say(user: LivePageHandle, text: str) -> None:
    """Type ``text`` into the message box and press Enter, as a person would."""
    box = user.page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def lines(user: LivePageHandle) -> list[str]:
    texts: list[str] = user.page.locator(MESSAGES).all_text_contents()
    return texts


def test_two_users_chat_both_ways_each_message_once_in_order(enter: Enter) -> None:
    _, alice = enter("alice")
    _, bob = enter("bob")
    expect(alice.page.locator(".people li")).to_have_text(["alice", "bob"])
    expect(bob.page.locator(".people li")).to_have_text(["alice", "bob"])
    expect(alice.page.locator(".messages li.announce").last).to_have_text("bob joined the room")

    script = [
        (alice, "alice", "Hi Bob!"),
        (bob, "bob", "Hello Alice."),
        (alice, "alice", "Did you read the Athena tutorial?"),
        (bob, "bob", "Twice: say goes up, hear comes down."),
        (bob, "bob", "And it works in Flask now."),
        (alice, "alice", "Ünïcödé ✓ and   spaces"),
    ]
    expected: list[str] = []
    for user, name, text in script:
        say(user, text)
        expected.append(f"{name}: {text}")
        # Wait for the line to arrive on both sides before the next one, so
        # the expected order is well defined across the two users.
        expect(alice.page.locator(MESSAGES)).to_have_text(expected)
        expect(bob.page.locator(MESSAGES)).to_have_text(expected)
    assert lines(alice) == lines(bob) == expected
    # Nothing left in the message box after sending.
    expect(alice.page.get_by_label("Message")).to_have_value("")
    screenshot(alice.page, "example_chat_alice")
    screenshot(bob.page, "example_chat_bob")


def test_fifty_rapid_messages_from_each_user_keep_their_order(enter: Enter) -> None:
    _, carol = enter("carol")
    _, dave = enter("dave")
    expect(carol.page.locator(".people li")).to_contain_text(["carol", "dave"])
    blast = """(prefix) => {
        // 50 submits of the real form in one task: nobody waits for anybody.
        const form = document.querySelector('.say-form');
        const input = form.querySelector('[name=text]');
        for (let i = 0; i < 50; i++) { input.value = `${prefix} ${i}`; form.requestSubmit(); }
    }"""
    carol.page.evaluate(blast, "c")
    dave.page.evaluate(blast, "d")
    expect(carol.page.locator(MESSAGES)).to_have_count(100, timeout=20_000)
    expect(dave.page.locator(MESSAGES)).to_have_count(100, timeout=20_000)
    seen_by_carol, seen_by_dave = lines(carol), lines(dave)
    # Both see the same interleaving (the server's broadcast order)...
    assert seen_by_carol == seen_by_dave
    # ... in which each user's own messages keep the order they were sent.
    assert [t for t in seen_by_carol if t.startswith("carol: ")] == [
        f"carol: c {i}" for i in range(50)
    ]
    assert [t for t in seen_by_carol if t.startswith("dave: ")] == [
        f"dave: d {i}" for i in range(50)
    ]


def test_join_leave_and_presence_updates(enter: Enter) -> None:
    _, erin = enter("erin")
    frank_context, frank = enter("frank")
    for user in (erin, frank):
        expect(user.page.locator(".people li")).to_have_text(["erin", "frank"])
    expect(erin.page.locator(".messages li.announce")).to_contain_text(
        ["erin joined the room", "frank joined the room"]
    )
    screenshot(erin.page, "example_chat_presence_two")

    # Closing frank's browser context fires pagehide; the runtime's
    # sendBeacon closes his page and the room sees him leave.
    frank_context.close()
    expect(erin.page.locator(".messages li.announce").last).to_have_text(
        "frank left the room", timeout=5_000
    )
    expect(erin.page.locator(".people li")).to_have_text(["erin"])
    # A reload is a leave and a join (the name is kept in the session).
    erin.page.reload()
    erin.wait_connected()
    expect(erin.page.locator(".room")).to_be_visible()
    expect(erin.page.locator(".people li")).to_have_text(["erin"])


def test_html_in_names_and_messages_is_shown_as_text(enter: Enter) -> None:
    evil_name = "<img src=x onerror=alert(1)>"
    evil_text = "<b>bold</b> & <script>alert(2)</script>"
    dialogs: list[str] = []
    _, mallory = enter(evil_name)
    _, grace = enter("grace")
    for user in (mallory, grace):
        user.page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    say(mallory, evil_text)
    expected = f"{evil_name}: {evil_text}"
    for user in (mallory, grace):
        expect(user.page.locator(MESSAGES).last).to_have_text(expected)
        expect(user.page.locator(".people")).to_contain_text(evil_name)
        expect(user.page.locator(".messages li.announce", has_text="grace joined")).to_be_visible()
        found = user.page.evaluate(
            """() => {
                const area = document.querySelector('.room');
                return {
                  elements: area.querySelectorAll('img, b, script').length,
                  message: [...area.querySelectorAll('.messages li.message')].at(-1).textContent,
                };
            }"""
        )
        assert found["elements"] == 0, "HTML from a user became elements"
        assert found["message"] == expected
    expect(mallory.page.locator(".messages li.announce").first).to_have_text(
        f"{evil_name} joined the room"
    )
    assert dialogs == []
    screenshot(grace.page, "example_chat_html_as_text")
