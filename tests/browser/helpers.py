"""Helpers of the browser tests: opening live pages, waiting, screenshots."""

from __future__ import annotations

import time
from typing import Any, Callable

import requests

from tests.support import OUTPUT

try:
    from playwright.sync_api import expect as expect
except ImportError:  # the browser fixture skips (or fails in CI) with the reason
    expect = None  # type: ignore[assignment]

SCREENSHOTS = OUTPUT / "screenshots"

#: ``<html data-athena-status>`` once the page's event stream is open.
CONNECTED = "document.documentElement.dataset.athenaStatus === 'connected'"


class LivePageHandle:
    """A Playwright page showing a live page, with what its console reported."""

    def __init__(self, page: Any) -> None:
        self.page = page
        #: Uncaught exceptions and console errors, as text.
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console.{msg.type}: {msg.text}")
                if msg.type == "error"
                else None
            ),
        )

    @property
    def page_id(self) -> str:
        page_id: str = self.page.evaluate(
            "JSON.parse(document.querySelector('meta[name=athena-config]').content).page"
        )
        return page_id

    def wait_connected(self, timeout: float = 15_000) -> None:
        self.page.wait_for_function(CONNECTED, timeout=timeout)

    def expose_module(self, name: str, as_global: str) -> None:
        """Make the ES module ``name`` (import map name) a global of the page, so
        synchronous predicates of ``wait_for_function`` can use it (a predicate
        returning a Promise counts as true at once)."""
        self.page.evaluate(
            "async ([name, as]) => { window[as] = await import(name); }", [name, as_global]
        )

    def status(self) -> str | None:
        status: str | None = self.page.evaluate("document.documentElement.dataset.athenaStatus")
        return status

    def run(self, body: str, arg: Any = None) -> Any:
        """Evaluate ``body`` in an async function with ``athena`` (the runtime
        module), ``Widget``, ``Athena``, ``RemoteError`` and ``arg`` in scope;
        ``widget(id)`` finds a widget by its server id."""
        script = (
            "async (arg) => {\n"
            "  const athena = await import('athena');\n"
            "  const { Widget, Athena, RemoteError } = athena;\n"
            "  const widget = (id) => Athena.widgets().find((w) => w.widgetId === id);\n"
            f"  {body}\n"
            "}"
        )
        return self.page.evaluate(script, arg)


def wait_for(page: Any, predicate: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll a Python ``predicate`` until it is truthy; AssertionError after ``timeout`` s.

    Polls through ``page.wait_for_timeout`` rather than ``time.sleep``: the
    sync Playwright API delivers events (``requestfailed``, ``console``...)
    only while one of its calls runs.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        page.wait_for_timeout(50)


def open_live(context: Any, url: str) -> LivePageHandle:
    """Open ``url`` in a new tab of ``context`` and wait until its stream is connected."""
    handle = LivePageHandle(context.new_page())
    handle.page.goto(url)
    handle.wait_connected()
    handle.expose_module("athena", "athena")
    return handle


def screenshot(page: Any, name: str) -> None:
    """Save what a person would see to ``test-output/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def get_json(url: str) -> Any:
    response = requests.get(url, timeout=5)
    try:
        response.raise_for_status()
        return response.json()
    finally:
        response.close()


def post_json(url: str) -> Any:
    response = requests.post(url, timeout=5)
    try:
        response.raise_for_status()
        return response.json()
    finally:
        response.close()
