"""A chat user sends a lone UTF-16 surrogate from Chromium; the room keeps working (issue 13).

``JSON.stringify("\\ud800")`` is valid JSON, so a browser sends it happily
(half an emoji cut by a script does the same). It used to poison the example
chat: ids skipped and repeated, broadcasts stopped halfway. Now the server
reads U+FFFD and everybody goes on talking.

Screenshot: ``test-output/screenshots/hostile_unicode_alice-chromium.png``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import EXAMPLE_APP, UserFactory, start_server
from tests.browser.live import LiveTab, open_live
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"
NAME_INPUT = ".name-form input[name=username]"
ENTER_BUTTON = ".name-form button[type=submit]"
MESSAGE_INPUT = ".say-form input[name=text]"
FFFD = "\ufffd"


@pytest.fixture
def server() -> Iterator[LiveServer]:
    server = start_server(EXAMPLE_APP, "hostile-unicode", heartbeat=60, page_timeout=120)
    yield server
    server.stop()


def enter(server: LiveServer, new_user: UserFactory, name: str) -> LiveTab:
    live = open_live(new_user(), server.url + "/chat")
    live.tab.fill(NAME_INPUT, name)
    live.tab.click(ENTER_BUTTON)
    live.wait_visible(".room")
    live.wait_hidden(".name-form")
    return live


def say(user: LiveTab, text: str) -> None:
    user.tab.fill(MESSAGE_INPUT, text)
    user.tab.press(MESSAGE_INPUT, "Enter")


@pytest.mark.parametrize("engine", ["chromium"], indirect=True)
def test_lone_surrogate_from_the_browser_leaves_the_room_working(
    server: LiveServer, new_user: UserFactory
) -> None:
    alice = enter(server, new_user, "alice")
    bob = enter(server, new_user, "bob")
    eve = enter(server, new_user, "eve")
    # Through the widget's own callRemote, as a script on eve's page would.
    said = eve.run(
        'const box = Athena.widgets()[0];\nreturn await box.callRemote("say", "boom\\ud800!");'
    )
    assert said == len("boom\ufffd!")
    expected = [f"eve: boom{FFFD}!"]
    for live in (alice, bob, eve):
        live.wait_texts(MESSAGES, expected)
    for speaker, name, text in [(alice, "alice", "still here?"), (bob, "bob", "yes, all fine")]:
        say(speaker, text)
        expected.append(f"{name}: {text}")
        for live in (alice, bob, eve):
            live.wait_texts(MESSAGES, expected)
    for live in (alice, bob, eve):
        assert live.texts(MESSAGES) == expected  # each line once, in order
        assert live.status() == "connected"
        assert not live.errors, live.errors
    alice.screenshot("hostile_unicode_alice")
