"""The example app's chat room with two real users, in Chromium, Firefox and WebKit.

Each user is a person of their own (their own cookie jar) in the engine
under test. The app runs as users deploy it: ``gunicorn -k gevent -w 1
'example_app:create_app()'``. Its heartbeat is set to 60 s here, so a user
who leaves within a test's few seconds can only have been noticed through
the ``sendBeacon`` close on ``pagehide`` (the server sees a dead stream only
when it writes to it).

Screenshots of the chat in each engine: ``test-output/screenshots/
example_chat_*-<engine>.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Callable

import pytest

from tests.browser.conftest import EXAMPLE_APP, UserFactory, start_server
from tests.browser.engines import Engine, User
from tests.browser.live import LiveTab, open_live, wait_for, wait_value
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"
ANNOUNCES = ".messages li.announce"
PEOPLE = ".people li"
NAME_INPUT = ".name-form input[name=username]"
ENTER_BUTTON = ".name-form button[type=submit]"
MESSAGE_INPUT = ".say-form input[name=text]"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LiveServer]]:
    started: dict[str, LiveServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def server(servers: dict[str, LiveServer], engine: Engine) -> LiveServer:
    """One chat server per engine: people one engine's tests leave behind (a
    user closed with their cookie jar may take the close beacon with it)
    must not be in the room another engine's tests start with."""
    if engine.name not in servers:
        servers[engine.name] = start_server(
            EXAMPLE_APP, f"example-chat-{engine.name}", heartbeat=60, page_timeout=120
        )
    return servers[engine.name]


Enter = Callable[[str], tuple[User, LiveTab]]


@pytest.fixture
def enter(server: LiveServer, new_user: UserFactory) -> Iterator[Enter]:
    """``enter(name)``: a new person opens /chat and picks ``name``."""
    tabs: list[LiveTab] = []

    def factory(name: str) -> tuple[User, LiveTab]:
        user = new_user()
        live = open_live(user, server.url + "/chat")
        live.tab.fill(NAME_INPUT, name)
        live.tab.click(ENTER_BUTTON)
        live.wait_visible(".room")
        live.wait_hidden(".name-form")
        tabs.append(live)
        return user, live

    yield factory
    for live in tabs:
        assert not live.errors, live.errors


def say(user: LiveTab, text: str) -> None:
    """Type ``text`` into the message box and press Enter, as a person would."""
    user.tab.fill(MESSAGE_INPUT, text)
    user.tab.press(MESSAGE_INPUT, "Enter")


def test_two_users_chat_both_ways_each_message_once_in_order(enter: Enter) -> None:
    _, alice = enter("alice")
    _, bob = enter("bob")
    alice.wait_includes(PEOPLE, ["alice", "bob"])
    bob.wait_includes(PEOPLE, ["alice", "bob"])
    wait_value(lambda: alice.texts(ANNOUNCES)[-1:], ["bob joined the room"])

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
        alice.wait_texts(MESSAGES, expected)
        bob.wait_texts(MESSAGES, expected)
    assert alice.texts(MESSAGES) == bob.texts(MESSAGES) == expected
    # Nothing left in the message box after sending.
    wait_value(lambda: alice.tab.js(f"document.querySelector('{MESSAGE_INPUT}').value"), "")
    alice.screenshot("example_chat_alice")
    bob.screenshot("example_chat_bob")


def test_fifty_rapid_messages_from_each_user_keep_their_order(enter: Enter) -> None:
    _, carol = enter("carol")
    _, dave = enter("dave")
    carol.wait_includes(PEOPLE, ["carol", "dave"])
    dave.wait_includes(PEOPLE, ["carol", "dave"])
    blast = """(prefix) => {
        // 50 submits of the real form in one task: nobody waits for anybody.
        const form = document.querySelector('.say-form');
        const input = form.querySelector('[name=text]');
        for (let i = 0; i < 50; i++) { input.value = `${prefix} ${i}`; form.requestSubmit(); }
    }"""
    carol.tab.evaluate(blast, "c")
    dave.tab.evaluate(blast, "d")
    wait_value(lambda: carol.count(MESSAGES), 100, what=f"{carol.engine} carol's lines")
    wait_value(lambda: dave.count(MESSAGES), 100, what=f"{dave.engine} dave's lines")
    seen_by_carol, seen_by_dave = carol.texts(MESSAGES), dave.texts(MESSAGES)
    # Both see the same interleaving (the server's broadcast order)...
    assert seen_by_carol == seen_by_dave
    # ... in which each user's own messages keep the order they were sent.
    assert [t for t in seen_by_carol if t.startswith("carol: ")] == [
        f"carol: c {i}" for i in range(50)
    ]
    assert [t for t in seen_by_carol if t.startswith("dave: ")] == [
        f"dave: d {i}" for i in range(50)
    ]
    carol.screenshot("example_chat_burst")


def test_join_leave_and_presence_updates(enter: Enter) -> None:
    _, erin = enter("erin")
    _, frank = enter("frank")
    # People of earlier tests may still be leaving: their names can come and go.
    for live in (erin, frank):
        live.wait_includes(PEOPLE, ["erin", "frank"])
    erin.wait_includes(ANNOUNCES, ["erin joined the room", "frank joined the room"])
    erin.screenshot("example_chat_presence_two")

    # Frank closes his tab: pagehide fires, the runtime's close beacon closes
    # his page and the room sees him leave. (Not his whole cookie jar at once:
    # Firefox drops a beacon still in flight when its user context goes.)
    frank.close()
    erin.wait_includes(
        ANNOUNCES, ["erin joined the room", "frank joined the room", "frank left the room"]
    )
    wait_for(lambda: "frank" not in [t.strip() for t in erin.texts(PEOPLE)], what="frank left")
    erin.wait_includes(PEOPLE, ["erin"])
    # A reload is a leave and a join (the name is kept in the session).
    erin.tab.reload()
    erin.wait_connected()
    erin.wait_visible(".room")
    erin.wait_includes(PEOPLE, ["erin"])
    assert "frank" not in [t.strip() for t in erin.texts(PEOPLE)]


def test_html_in_names_and_messages_is_shown_as_text(enter: Enter) -> None:
    evil_name = "<img src=x onerror=alert(1)>"
    evil_text = "<b>bold</b> & <script>alert(2)</script>"
    _, mallory = enter(evil_name)
    _, grace = enter("grace")
    for live in (mallory, grace):
        live.tab.js("(window.alerts = [], window.alert = (m) => window.alerts.push(m), 0)")

    say(mallory, evil_text)
    expected = f"{evil_name}: {evil_text}"
    for live in (mallory, grace):
        wait_value(lambda: live.texts(MESSAGES)[-1:], [expected], what=live.engine)  # noqa: B023
        live.wait("document.querySelector('.people').textContent.includes('grace')")
        found = live.tab.evaluate(
            """() => {
                const area = document.querySelector('.room');
                return {
                  elements: area.querySelectorAll('img, b, script').length,
                  message: [...area.querySelectorAll('.messages li.message')].at(-1).textContent,
                  people: document.querySelector('.people').textContent,
                  alerts: window.alerts,
                };
            }"""
        )
        assert found["elements"] == 0, "HTML from a user became elements"
        assert found["message"] == expected
        assert evil_name in found["people"]
        assert found["alerts"] == []
    assert mallory.texts(ANNOUNCES)[0] == f"{evil_name} joined the room"
    grace.screenshot("example_chat_html_as_text")
