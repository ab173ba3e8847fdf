"""The shared event stream in Chromium, Firefox and WebKit (DESIGN §9).

Several tabs of one person (one cookie jar, one session) in the engine under
test: one tab leads and holds the one event stream for every tab's page, and
every tab hears every line of the chat once, in order. The example app runs
as users deploy it (``gunicorn -k gevent``, HTTP/1.1) with its defaults, so
the stream is shared because that is the default.

Tabs are windows in WebKit (see ``engines.py``); Web Locks and
BroadcastChannel work across them as across Chromium's and Firefox's tabs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import EXAMPLE_APP, UserFactory, start_server
from tests.browser.engines import Engine
from tests.browser.live import LiveTab, open_live, wait_value
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"
NAME_INPUT = ".name-form input[name=username]"
ENTER_BUTTON = ".name-form button[type=submit]"
MESSAGE_INPUT = ".say-form input[name=text]"
SHARING = "(await import('athena')).Athena.sharedStream"
TABS = 4


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, LiveServer]]:
    started: dict[str, LiveServer] = {}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture
def server(servers: dict[str, LiveServer], engine: Engine) -> LiveServer:
    """One chat per engine, with the app's default settings (shared stream on)."""
    if engine.name not in servers:
        servers[engine.name] = start_server(
            EXAMPLE_APP, f"shared-engines-{engine.name}", heartbeat=60, page_timeout=120
        )
    return servers[engine.name]


def enter(user_tab: LiveTab, name: str) -> None:
    """Pick a name if this session has none yet; wait for the room."""
    if user_tab.visible(NAME_INPUT):
        user_tab.tab.fill(NAME_INPUT, name)
        user_tab.tab.click(ENTER_BUTTON)
    user_tab.wait_visible(".room")


def test_tabs_of_one_person_share_one_stream_and_hear_each_line_once_in_order(
    server: LiveServer, new_user: UserFactory, engine: Engine
) -> None:
    person = new_user()
    tabs: list[LiveTab] = []
    for _ in range(TABS):
        live = open_live(person, server.url + "/chat")
        enter(live, f"tabs-{engine.name}")
        tabs.append(live)
    page_ids = sorted(t.page_id for t in tabs)

    def leaders() -> list[tuple[int, list[str]]]:
        found = []
        for i, t in enumerate(tabs):
            sharing = t.tab.js(SHARING)
            assert sharing is not None, f"{engine.name}: tab {i} has a stream of its own"
            if sharing["leader"]:
                found.append((i, sorted(sharing["pages"])))
        return found

    # One leader, whose one stream carries the page of every tab.
    wait_value(lambda: [pages for _, pages in leaders()], [page_ids], what=engine.name)
    expected: list[str] = []
    for i, live in enumerate(tabs):
        text = f"{engine.name} tab {i} speaks"
        live.tab.fill(MESSAGE_INPUT, text)
        live.tab.press(MESSAGE_INPUT, "Enter")
        expected.append(f"tabs-{engine.name}: {text}")
        for other in tabs:
            other.wait_texts(MESSAGES, expected)
    for live in tabs:
        assert [t.strip() for t in live.texts(MESSAGES)] == expected
        assert live.status() == "connected"
    tabs[-1].screenshot("shared_stream_tabs")
    for live in tabs:
        assert not live.errors, live.errors
