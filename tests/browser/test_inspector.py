"""The inspector in Chromium: a live page that follows the example chat's pages.

The example app runs under ``gunicorn -k gevent -w 1`` with the inspector on
(``tests/apps/inspected_example.py``). A person watching the inspector sees a
chat page appear when it opens and disappear when its tab closes (the
``sendBeacon`` close on ``pagehide``), without reloading the inspector.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import ContextFactory, start_server
from tests.browser.helpers import expect, open_live, screenshot
from tests.support import LiveServer

pytestmark = pytest.mark.browser

INSPECTOR = "/_athena/inspector/"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(
        "tests.apps.inspected_example:create_app()", "inspector", heartbeat=60, page_timeout=120
    )
    yield server
    server.stop()


def test_the_inspector_updates_live_as_a_chat_page_opens_and_closes(
    server: LiveServer, new_context: ContextFactory
) -> None:
    inspector = open_live(new_context(), server.url + INSPECTOR)
    view = inspector.page.locator("[data-athena-class='AthenaInspector.Inspector']")
    expect(view).to_have_attribute("data-pages", "1")  # its own page
    expect(view.locator("code", has_text="InspectorView")).to_have_count(1)

    chat = open_live(new_context(), server.url + "/chat")
    chat.page.get_by_label("Your name").fill("alice")
    chat.page.get_by_role("button", name="Enter the room").click()
    expect(view).to_have_attribute("data-pages", "2")
    expect(view.locator("code", has_text="ChatterBox")).to_have_count(1)
    expect(view.locator(".status-connected")).to_have_count(2)
    screenshot(inspector.page, "inspector-with-chat")

    chat.page.close(run_before_unload=True)  # pagehide: the beacon closes the page
    expect(view).to_have_attribute("data-pages", "1")
    expect(view.locator("code", has_text="ChatterBox")).to_have_count(0)
    screenshot(inspector.page, "inspector-after-chat-closed")
    assert not inspector.errors, inspector.errors
    assert not chat.errors, chat.errors
