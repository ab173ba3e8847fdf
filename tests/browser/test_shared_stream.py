"""Every tab works: the tabs of one browser share one event stream (DESIGN §9).

The example chat under ``gunicorn -k gevent`` speaks HTTP/1.1, where Chromium
opens at most six connections to one origin: with one event stream per tab,
the seventh tab never loaded. All tabs here are in ONE browser context (one
cookie jar, one session, one connection pool), as a person's tabs are.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.browser.conftest import EXAMPLE_APP, LAUNCH_ARGS, ContextFactory, start_server
from tests.browser.helpers import LivePageHandle, expect, open_live, screenshot
from tests.faultproxy import FaultProxy
from tests.support import LiveServer

pytestmark = pytest.mark.browser

MESSAGES = ".messages li.message"
SHARING = "async () => (await import('athena')).Athena.sharedStream"
#: Kept across reloads: a tab that went gone (and reloaded) says why.
GONE_LOG = """document.addEventListener("athena:gone", (event) => {
  sessionStorage.setItem("athena-test-gone", JSON.stringify(event.detail));
});"""


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    # A long heartbeat: a stream that stalls is found by the tests, not hidden
    # by a watchdog's reconnect.
    server = start_server(EXAMPLE_APP, "shared-stream", heartbeat=30, page_timeout=120)
    yield server
    server.stop()


def open_tab(context: Any, url: str, name: str) -> LivePageHandle:
    """A new tab of ``context`` on the chat, in the room (a returning visitor
    of the session enters at once; the first one types a name)."""
    tab = open_live(context, url + "/chat")
    form = tab.page.locator(".name-form")
    if form.is_visible():
        tab.page.get_by_label("Your name").fill(name)
        tab.page.get_by_role("button", name="Enter the room").click()
    expect(tab.page.locator(".room")).to_be_visible()
    return tab


def say(tab: LivePageHandle, text: str) -> None:
    box = tab.page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")


def lines(tab: LivePageHandle) -> list[str]:
    texts: list[str] = tab.page.locator(MESSAGES).all_text_contents()
    return texts


def wait_all_see(tabs: list[LivePageHandle], count: int) -> None:
    for tab in tabs:
        expect(tab.page.locator(MESSAGES)).to_have_count(count, timeout=30_000)


def sharing(tab: LivePageHandle) -> Any:
    return tab.page.evaluate(SHARING)


def leader_of(tabs: list[LivePageHandle]) -> LivePageHandle:
    gone = [t.page.evaluate("sessionStorage.getItem('athena-test-gone')") for t in tabs]
    assert not any(gone), gone
    leaders = [t for t in tabs if (sharing(t) or {}).get("leader")]
    assert len(leaders) == 1, [sharing(t) for t in tabs]
    return leaders[0]


def said(tabs: list[LivePageHandle]) -> list[str]:
    """What the room shows, the same in every tab (each line once, in one order)."""
    seen = [lines(tab) for tab in tabs]
    assert all(s == seen[0] for s in seen), seen
    assert len(set(seen[0])) == len(seen[0]), seen[0]
    return seen[0]


def test_ten_tabs_of_one_browser_on_http_1_1_each_chat_and_see_every_message_once(
    server: LiveServer, new_context: ContextFactory
) -> None:
    context = new_context()
    context.add_init_script(GONE_LOG)
    tabs = [open_tab(context, server.url, "ten") for _ in range(10)]
    # One stream for all: one leader, carrying the ten pages.
    leader = leader_of(tabs)
    assert sorted(sharing(leader)["pages"]) == sorted(t.page_id for t in tabs)
    sent = []
    for i, tab in enumerate(tabs):
        text = f"tab {i} says hello"
        say(tab, text)
        sent.append(text)
        wait_all_see(tabs, i + 1)
    room = said(tabs)
    assert [line.split(": ", 1)[1] for line in room] == sent
    screenshot(tabs[9].page, "shared_stream_tab_10")
    for tab in tabs:
        assert not tab.errors, tab.errors


def test_closing_the_leader_tab_mid_conversation_loses_and_doubles_nothing(
    server: LiveServer, new_context: ContextFactory
) -> None:
    context = new_context()
    context.add_init_script(GONE_LOG)
    tabs = [open_tab(context, server.url, "eight") for _ in range(8)]
    leader = leader_of(tabs)
    others = [t for t in tabs if t is not leader]
    for i in range(3):
        say(others[i], f"before {i}")
        wait_all_see(tabs, i + 1)
    # The leader leaves while messages are on their way: the next tab in the
    # lock's queue takes over and replays what each page missed.
    say(others[0], "during 0")
    leader.page.close()
    for i in range(1, 4):
        say(others[i], f"during {i}")
    wait_all_see(others, 7)
    new_leader = leader_of(others)
    assert new_leader is not leader
    # Tabs opened after the change join the new leader's stream.
    more = [open_tab(context, server.url, "eight") for _ in range(2)]
    assert leader_of(others + more) is new_leader
    say(more[1], "after")
    wait_all_see(others, 8)
    for tab in more:  # they see what was said since they came
        expect(tab.page.locator(MESSAGES).last).to_contain_text("after")
    room = said(others)
    assert [line.split(": ", 1)[1] for line in room] == [
        "before 0",
        "before 1",
        "before 2",
        "during 0",
        "during 1",
        "during 2",
        "during 3",
        "after",
    ]
    for tab in others + more:
        assert not tab.errors, tab.errors


def test_a_cut_shared_stream_resumes_every_tab_by_replay(
    server: LiveServer, new_context: ContextFactory
) -> None:
    with FaultProxy(server.port) as proxy:
        context = new_context()
        context.add_init_script(GONE_LOG)
        tabs = [open_tab(context, proxy.url, "cut") for _ in range(7)]
        leader_of(tabs)
        say(tabs[0], "before the cut")
        wait_all_see(tabs, 1)
        assert proxy.cut_streams("close") == 1  # one stream for seven tabs
        for i in range(1, 4):
            say(tabs[i], f"after the cut {i}")
        wait_all_see(tabs, 4)
        room = said(tabs)
        assert [line.split(": ", 1)[1] for line in room] == [
            "before the cut",
            "after the cut 1",
            "after the cut 2",
            "after the cut 3",
        ]
        for tab in tabs:
            expect(tab.page.locator("html")).to_have_attribute("data-athena-status", "connected")
            # The leader's browser logs the cut itself; nothing else may fail.
            errors = [e for e in tab.errors if "ERR_INCOMPLETE_CHUNKED_ENCODING" not in e]
            assert not errors, errors


def test_a_page_of_another_session_cannot_join_a_shared_stream(
    server: LiveServer, new_context: ContextFactory
) -> None:
    mine = open_tab(new_context(), server.url, "mine")
    theirs = open_tab(new_context(), server.url, "theirs")
    cookies = {c["name"]: c["value"] for c in mine.page.context.cookies()}
    url = f"{server.url}/_athena/events?pages={mine.page_id}:0,{theirs.page_id}:0"
    response = requests.get(url, cookies=cookies, timeout=10, stream=True)
    try:
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
    finally:
        response.close()
    # Both pages keep working.
    say(mine, "still here")
    expect(mine.page.locator(MESSAGES).last).to_contain_text("still here")
    expect(theirs.page.locator(MESSAGES).last).to_contain_text("still here")


@pytest.fixture
def bfcache_context(browser: Any) -> Iterator[Any]:
    """A context of a Chromium with its back/forward cache on (Playwright
    turns it off by default), torn down with its browser."""
    cached = browser.browser_type.launch(
        executable_path=shutil.which("chromium"),
        args=LAUNCH_ARGS,
        ignore_default_args=["--disable-back-forward-cache"],
    )
    try:
        context = cached.new_context(viewport={"width": 1100, "height": 760})
        context.set_default_timeout(15_000)
        context.add_init_script(GONE_LOG + BFCACHE_LOG)
        yield context
    finally:
        cached.close()


#: Kept on the page: whether the last ``pageshow`` came from the cache.
BFCACHE_LOG = (
    "addEventListener('pageshow', (event) => { window.athenaTestRestored = event.persisted; });"
)


def test_a_leader_going_into_the_back_forward_cache_hands_over_and_rejoins_when_back(
    server: LiveServer, bfcache_context: Any
) -> None:
    # The leader tab navigates away (its page kept in the back/forward
    # cache): it gives the stream up on pagehide, another tab leads, and
    # when the person goes back the page comes back alive, rejoins the
    # shared stream and replays what was said meanwhile, once each.
    tabs = [open_tab(bfcache_context, server.url, "cache") for _ in range(3)]
    leader = leader_of(tabs)
    others = [t for t in tabs if t is not leader]
    say(others[0], "before")
    wait_all_see(tabs, 1)
    leader.page.goto(server.url + "/")  # the example's index: not a live page
    say(others[1], "while away 1")
    say(others[0], "while away 2")
    wait_all_see(others, 3)
    new_leader = leader_of(others)
    # No load event for a page restored from the cache: wait for the commit.
    leader.page.go_back(wait_until="commit")
    leader.page.wait_for_function("window.athenaTestRestored === true")
    leader.wait_connected()
    wait_all_see(tabs, 3)
    say(leader, "back")
    wait_all_see(tabs, 4)
    assert leader_of(tabs) is new_leader  # it rejoined; the lock stayed where it went
    assert leader.page_id in sharing(new_leader)["pages"]
    assert [line.split(": ", 1)[1] for line in said(tabs)] == [
        "before",
        "while away 1",
        "while away 2",
        "back",
    ]
    for tab in tabs:
        assert not tab.errors, tab.errors


def test_a_browser_without_web_locks_gives_its_tab_a_stream_of_its_own(
    server: LiveServer, new_context: ContextFactory
) -> None:
    # The fallback: where navigator.locks is missing (an old engine, a page
    # that is not a secure context) the tab opens its own stream, as before,
    # and chats with the tabs that share theirs.
    context = new_context()
    context.add_init_script(GONE_LOG)
    sharing_tabs = [open_tab(context, server.url, "mixed") for _ in range(2)]
    page = context.new_page()
    page.add_init_script(
        "Object.defineProperty(Navigator.prototype, 'locks', {get: () => undefined})"
    )
    alone = LivePageHandle(page)
    page.goto(server.url + "/chat")
    alone.wait_connected()
    expect(page.locator(".room")).to_be_visible()
    assert sharing(alone) is None
    leader = leader_of(sharing_tabs)
    assert alone.page_id not in sharing(leader)["pages"]
    tabs = [*sharing_tabs, alone]
    for i, tab in enumerate(tabs):
        say(tab, f"mixed {i}")
        wait_all_see(tabs, i + 1)
    assert [line.split(": ", 1)[1] for line in said(tabs)] == ["mixed 0", "mixed 1", "mixed 2"]
    for tab in tabs:
        assert not tab.errors, tab.errors


def test_switched_off_every_tab_has_a_stream_of_its_own(new_context: ContextFactory) -> None:
    server = start_server(EXAMPLE_APP, "shared-stream-off", shared_stream=False)
    try:
        context = new_context()
        tabs = [open_tab(context, server.url, "own") for _ in range(3)]
        assert [sharing(t) for t in tabs] == [None, None, None]
        for i, tab in enumerate(tabs):
            say(tab, f"own {i}")
            wait_all_see(tabs, i + 1)
        assert [line.split(": ", 1)[1] for line in said(tabs)] == ["own 0", "own 1", "own 2"]
    finally:
        server.stop()


def test_a_leader_that_stops_running_is_replaced_and_rejoins_when_it_runs_again(
    new_context: ContextFactory,
) -> None:
    # A tab can stop running without a freeze event (Firefox and WebKit fire
    # none; a stuck or paused tab): it keeps the lock and relays nothing.
    # Here its JS is paused in the debugger. After 2.5 heartbeats and some
    # slack of silence another tab takes the lock over; when the tab runs
    # again, what it relays late is ignored, and it rejoins as a follower.
    server = start_server(EXAMPLE_APP, "shared-stream-stuck", heartbeat=2, page_timeout=120)
    try:
        context = new_context()
        context.add_init_script(GONE_LOG)
        tabs = [open_tab(context, server.url, "stuck") for _ in range(3)]
        leader = leader_of(tabs)
        others = [t for t in tabs if t is not leader]
        say(others[0], "before")
        wait_all_see(tabs, 1)
        cdp = context.new_cdp_session(leader.page)
        cdp.send("Debugger.enable")
        cdp.send("Debugger.pause")  # takes effect at its next task (a heartbeat at the latest)
        say(others[1], "while stuck")
        for tab in others:
            expect(tab.page.locator(MESSAGES)).to_have_count(2, timeout=60_000)
        new_leader = leader_of(others)
        cdp.send("Debugger.resume")
        cdp.send("Debugger.disable")
        wait_all_see(tabs, 2)
        say(leader, "running again")
        wait_all_see(tabs, 3)
        assert leader_of(tabs) is new_leader
        assert [line.split(": ", 1)[1] for line in said(tabs)] == [
            "before",
            "while stuck",
            "running again",
        ]
        for tab in tabs:
            assert not tab.errors, tab.errors
    finally:
        server.stop()
