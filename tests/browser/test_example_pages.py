"""The example app's other pages in a real Chromium: index, server push, nested widgets,
and what a person sees when the server goes away.

``gunicorn -k gevent -w 1 'example_app:create_app()'``, as in the README.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import EXAMPLE_APP, start_server
from tests.browser.helpers import LivePageHandle, expect, open_live, screenshot
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


def item(todo: LivePageHandle, text: str) -> Any:
    return todo.page.locator(".items > li", has_text=text)


def test_todo_nested_and_dynamic_widgets_from_both_sides(server: LiveServer, context: Any) -> None:
    todo = open_live(context, server.url + "/todo")
    page = todo.page
    expect(page.locator(".items > li .text")).to_have_text(
        ["Read the Athena tutorial", "Port it to Flask"]
    )

    # Add: the exposed method returns a new Item widget; the List inserts it.
    page.get_by_label("New item").fill("Write browser tests")
    page.get_by_role("button", name="Add", exact=True).click()
    added = item(todo, "Write browser tests")
    expect(added).to_have_count(1)
    expect(page.get_by_label("New item")).to_have_value("")
    assert added.evaluate(
        "(node) => node.getAttribute('data-athena-class') === 'Todo.Item'"
        " && node.parentElement.closest('[data-athena-widget]')"
        ".getAttribute('data-athena-class') === 'Todo.List'"
    )

    # Toggle: an exposed method of the child widget.
    added.get_by_role("checkbox").check()
    expect(added).to_have_class(re.compile(r"\bdone\b"))
    added.get_by_role("checkbox").uncheck()
    expect(added).not_to_have_class(re.compile(r"\bdone\b"))

    # The server adds one on its own (call_remote with a widget argument).
    page.get_by_role("button", name="Let the server add one").click()
    expect(item(todo, "Added by the server")).to_have_count(1)
    expect(page.locator(".items > li")).to_have_count(4)
    screenshot(page, "example_todo")

    # Remove on the server: the server detaches it, the node goes away.
    item(todo, "Port it to Flask").get_by_role("button", name="Remove").click()
    expect(item(todo, "Port it to Flask")).to_have_count(0)

    # Detach from the browser (×): mark two items done, detach one of them
    # here. The server's clear_done then finds only the other one, so it had
    # detached the first.
    first, served = item(todo, "Read the Athena tutorial"), item(todo, "Added by the server")
    first.get_by_role("checkbox").check()
    served.get_by_role("checkbox").check()
    expect(first).to_have_class(re.compile(r"\bdone\b"))
    expect(served).to_have_class(re.compile(r"\bdone\b"))
    page.evaluate(
        "async () => { const { Widget } = await import('athena');"
        " window.kept = Widget.get(document.querySelector('.items > li')); }"
    )
    first.get_by_role("button", name="×").click()
    expect(first).to_have_count(0)
    cleared = page.evaluate(
        """async () => {
            const { Widget } = await import('athena');
            return Widget.get(document.querySelector('.items')).clearDone();
        }"""
    )
    assert cleared == 1
    expect(served).to_have_count(0)
    expect(page.locator(".items > li .text")).to_have_text(["Write browser tests"])
    # The browser-detached item is gone on the server: it no longer toggles.
    stale = page.evaluate(
        "() => window.kept.callRemote('toggle').then(() => 'toggled', (e) => e.code)"
    )
    assert stale == "widget-not-found"
    unexpected = [e for e in todo.errors if "status of 404" not in e]
    assert not unexpected, unexpected


def test_stopping_the_server_shows_the_connection_lost_banner(context: Any) -> None:
    server = start_server(EXAMPLE_APP, "example-stopped")
    try:
        live = open_live(context, server.url + "/live")
        banner = live.page.locator(".athena-banner")
        expect(banner).to_have_count(0)
        live.page.wait_for_function(f"{CLOCK_TICKS} >= 1")
    finally:
        server.stop()
    expect(banner).to_be_visible(timeout=10_000)
    expect(banner).to_contain_text("Connection lost")
    assert live.status() in ("disconnected", "gone")
    assert live.page.evaluate("document.documentElement.dataset.athenaStatus") in (
        "disconnected",
        "gone",
    )
    screenshot(live.page, "example_server_stopped_banner")
