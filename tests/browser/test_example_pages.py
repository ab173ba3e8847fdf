"""The example app's other pages: index and server push (Chromium), nested
widgets and what a person sees when the server goes away (every engine).

``gunicorn -k gevent -w 1 'example_app:create_app()'``, as in the README.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import EXAMPLE_APP, start_server
from tests.browser.engines import User
from tests.browser.helpers import expect, open_live, screenshot
from tests.browser.live import LiveTab, wait_value
from tests.browser.live import open_live as open_live_in
from tests.support import LiveServer

pytestmark = pytest.mark.browser

#: How many ticks the clock widget has shown (its data-ticks), in JS.
CLOCK_TICKS = (
    "Number(document.querySelector('[data-athena-class=\"Live.Clock\"]').dataset.ticks || 0)"
)


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(EXAMPLE_APP, "example-pages")
    yield server
    server.stop()


def test_index_links_to_every_example(server: LiveServer, context: Any) -> None:
    page = context.new_page()
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Live elements for Flask")).to_be_visible()
    for name, path in [
        ("Chat room", "/chat"),
        ("Server push", "/live"),
        ("Nested widgets", "/todo"),
    ]:
        expect(page.locator("main").get_by_role("link", name=re.compile(name))).to_have_attribute(
            "href", path
        )
    # No live page here: the runtime is not even loaded.
    assert page.locator("meta[name=athena-config]").count() == 0
    screenshot(page, "example_index")


def test_live_page_updates_without_any_user_action(server: LiveServer, context: Any) -> None:
    live = open_live(context, server.url + "/live")
    clock = live.page.locator('[data-athena-class="Live.Clock"]')
    ticks = CLOCK_TICKS
    live.page.wait_for_function(f"{ticks} >= 1")
    first = live.page.evaluate(ticks)
    first_face = clock.locator(".time").text_content()
    live.page.wait_for_function(f"{ticks} >= {first + 2}")
    assert clock.locator(".time").text_content() != first_face
    assert re.fullmatch(r"\d\d:\d\d:\d\d", clock.locator(".time").text_content() or "")

    job = live.page.locator('[data-athena-class="Live.ProgressJob"]')
    job.get_by_role("button", name="Start the job").click()
    expect(job).to_have_attribute("data-state", "running")
    expect(job.locator(".status")).to_have_text(re.compile(r"Step \d+ of 30"))
    expect(job).to_have_attribute("data-state", "finished", timeout=15_000)
    expect(job.locator(".status")).to_have_text("Finished: 30 steps done")
    bar = job.locator("progress.bar")
    assert bar.evaluate("(bar) => [bar.value, bar.max]") == [30, 30]
    expect(job.get_by_role("button", name="Run again")).to_be_enabled()
    screenshot(live.page, "example_live")
    assert not live.errors, live.errors


def mark(todo: LiveTab, text: str, key: str) -> str:
    """Tag the to-do item showing ``text`` as ``data-test=key``; its CSS selector."""
    found = todo.tab.evaluate(
        """([text, key]) => {
            const item = [...document.querySelectorAll('.items > li')]
              .find((li) => li.querySelector('.text').textContent === text);
            if (item) item.dataset.test = key;
            return Boolean(item);
        }""",
        [text, key],
    )
    assert found, f"no item {text!r}"
    return f'.items > li[data-test="{key}"]'


def has_class(todo: LiveTab, selector: str, name: str) -> bool:
    found: bool = todo.tab.evaluate(
        "([s, name]) => document.querySelector(s)?.classList.contains(name) ?? false",
        [selector, name],
    )
    return found


def test_todo_nested_and_dynamic_widgets_from_both_sides(server: LiveServer, user: User) -> None:
    todo = open_live_in(user, server.url + "/todo")
    todo.wait_texts(".items > li .text", ["Read the Athena tutorial", "Port it to Flask"])

    # Add: the exposed method returns a new Item widget; the List inserts it.
    todo.tab.fill(".add-form input[name=text]", "Write browser tests")
    todo.tab.click(".add-form button[type=submit]")
    todo.wait_texts(
        ".items > li .text",
        ["Read the Athena tutorial", "Port it to Flask", "Write browser tests"],
    )
    wait_value(lambda: todo.tab.js("document.querySelector('.add-form input').value"), "")
    added = mark(todo, "Write browser tests", "added")
    assert todo.tab.evaluate(
        "(s) => { const node = document.querySelector(s);"
        " return node.getAttribute('data-athena-class') === 'Todo.Item'"
        " && node.parentElement.closest('[data-athena-widget]')"
        ".getAttribute('data-athena-class') === 'Todo.List'; }",
        added,
    )

    # Toggle: an exposed method of the child widget.
    todo.tab.click(f"{added} input[type=checkbox]")
    wait_value(lambda: has_class(todo, added, "done"), True, what="checked")
    todo.tab.click(f"{added} input[type=checkbox]")
    wait_value(lambda: has_class(todo, added, "done"), False, what="unchecked")

    # The server adds one on its own (call_remote with a widget argument).
    todo.tab.click(".actions button[data-athena-on='click:serverAdds']")
    wait_value(lambda: todo.count(".items > li"), 4)
    assert todo.texts(".items > li .text")[-1] == "Added by the server"
    todo.screenshot("example_todo")

    # Remove on the server: the server detaches it, the node goes away.
    todo.tab.click(f"{mark(todo, 'Port it to Flask', 'port')} button.remove")
    wait_value(lambda: todo.count('.items > li[data-test="port"]'), 0)

    # Detach from the browser (×): mark two items done, detach one of them
    # here. The server's clear_done then finds only the other one, so it had
    # detached the first.
    first = mark(todo, "Read the Athena tutorial", "first")
    served = mark(todo, "Added by the server", "served")
    todo.tab.click(f"{first} input[type=checkbox]")
    todo.tab.click(f"{served} input[type=checkbox]")
    wait_value(lambda: has_class(todo, first, "done"), True)
    wait_value(lambda: has_class(todo, served, "done"), True)
    todo.tab.evaluate(
        "async (s) => { const { Widget } = await import('athena');"
        " window.kept = Widget.get(document.querySelector(s)); }",
        first,
    )
    todo.tab.click(f"{first} button.detach")
    wait_value(lambda: todo.count(first), 0)
    cleared = todo.tab.evaluate(
        """async () => {
            const { Widget } = await import('athena');
            return Widget.get(document.querySelector('.items')).clearDone();
        }"""
    )
    assert cleared == 1
    wait_value(lambda: todo.count(served), 0)
    todo.wait_texts(".items > li .text", ["Write browser tests"])
    # The browser-detached item is gone on the server: it no longer toggles.
    stale = todo.tab.evaluate(
        "() => window.kept.callRemote('toggle').then(() => 'toggled', (e) => e.code)"
    )
    assert stale == "widget-not-found"
    assert not todo.errors, todo.errors


def test_stopping_the_server_shows_the_connection_lost_banner(user: User) -> None:
    server = start_server(EXAMPLE_APP, "example-stopped")
    try:
        live = open_live_in(user, server.url + "/live")
        assert live.count(".athena-banner") == 0
        live.wait(f"{CLOCK_TICKS} >= 1")
    finally:
        server.stop()
    live.wait_visible(".athena-banner", timeout=15)
    assert "Connection lost" in live.texts(".athena-banner")[0]
    assert live.status() in ("disconnected", "gone")
    live.screenshot("example_server_stopped_banner")
