"""Live pages in any engine: :func:`open_live` and :class:`LiveTab` (on :mod:`engines`)."""

from __future__ import annotations

import time
from typing import Any, Callable

from tests.browser.engines import WAIT_TIMEOUT, Tab, User

#: ``<html data-athena-status>`` once the page's event stream is open.
CONNECTED = "document.documentElement.dataset.athenaStatus === 'connected'"

#: Error texts a browser prints by itself for a request that failed on the
#: network or answered 4xx (Chromium: "Failed to load resource: ..."); tests
#: that provoke these check the answers themselves.
NETWORK_NOISE = ("Failed to load resource",)


class LiveTab:
    """A tab showing a live page (a ``LivePage`` of flask_athena)."""

    def __init__(self, tab: Tab) -> None:
        self.tab = tab
        self.engine = tab.engine

    @property
    def page_id(self) -> str:
        page_id: str = self.tab.js(
            "JSON.parse(document.querySelector('meta[name=athena-config]').content).page"
        )
        return page_id

    def status(self) -> str | None:
        status: str | None = self.tab.js("document.documentElement.dataset.athenaStatus ?? null")
        return status

    def wait_connected(self, timeout: float = WAIT_TIMEOUT) -> None:
        self.tab.wait(CONNECTED, timeout=timeout)

    def wait(self, condition: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait for a JS condition; ``athena`` (the runtime module) and the
        globals :meth:`expose_module` made are in scope."""
        self.tab.wait(condition, timeout=timeout)

    def expose_module(self, name: str, as_global: str) -> None:
        """Make the ES module ``name`` (import map name) the page's global ``as_global``."""
        self.tab.evaluate(
            "async ([name, as]) => { window[as] = await import(name); }", [name, as_global]
        )

    def run(self, body: str, arg: Any = None) -> Any:
        """Run ``body`` in an async function with ``athena`` (the runtime
        module), ``Widget``, ``Athena``, ``RemoteError`` and ``arg`` in scope;
        ``widget(id)`` finds a widget by its server id. Its return value."""
        script = (
            "async (arg) => {\n"
            "  const athena = await import('athena');\n"
            "  const { Widget, Athena, RemoteError } = athena;\n"
            "  const widget = (id) => Athena.widgets().find((w) => w.widgetId === id);\n"
            f"  {body}\n"
            "}"
        )
        return self.tab.evaluate(script, arg)

    # -- what a person sees ----------------------------------------------------

    def texts(self, selector: str) -> list[str]:
        """The text of every element matching ``selector``, in document order."""
        texts: list[str] = self.tab.evaluate(
            "(s) => [...document.querySelectorAll(s)].map((n) => n.textContent)", selector
        )
        return texts

    def count(self, selector: str) -> int:
        count: int = self.tab.evaluate("(s) => document.querySelectorAll(s).length", selector)
        return count

    def visible(self, selector: str) -> bool:
        """Some element matches ``selector`` and has a box on screen."""
        visible: bool = self.tab.evaluate(
            """(s) => [...document.querySelectorAll(s)].some((n) => {
                 const style = getComputedStyle(n);
                 return n.getClientRects().length > 0 && style.visibility !== 'hidden';
               })""",
            selector,
        )
        return visible

    def wait_texts(self, selector: str, expected: list[str], timeout: float = WAIT_TIMEOUT) -> None:
        """Wait until the texts of ``selector`` are exactly ``expected`` (trimmed)."""
        wait_value(
            lambda: [text.strip() for text in self.texts(selector)], expected, timeout, self.engine
        )

    def wait_includes(
        self, selector: str, expected: list[str], timeout: float = WAIT_TIMEOUT
    ) -> None:
        """Wait until ``expected`` appear, in this order, among the texts of
        ``selector`` (others may come between them)."""

        def included() -> bool:
            texts = iter(text.strip() for text in self.texts(selector))
            return all(any(text == wanted for text in texts) for wanted in expected)

        wait_for(included, timeout, f"{self.engine}: {expected} in {selector}")

    def wait_visible(self, selector: str, timeout: float = WAIT_TIMEOUT) -> None:
        wait_value(lambda: self.visible(selector), True, timeout, f"{self.engine} {selector}")

    def wait_hidden(self, selector: str, timeout: float = WAIT_TIMEOUT) -> None:
        wait_value(lambda: self.visible(selector), False, timeout, f"{self.engine} {selector}")

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions, without network noise."""
        return [e for e in self.tab.errors if not any(noise in e for noise in NETWORK_NOISE)]

    def screenshot(self, name: str) -> None:
        """``test-output/screenshots/<name>-<engine>.png``."""
        self.tab.screenshot(f"{name}-{self.engine}")

    def close(self) -> None:
        self.tab.close()


def wait_value(
    read: Callable[[], Any], expected: Any, timeout: float = WAIT_TIMEOUT, what: str = ""
) -> None:
    """Poll ``read()`` until it equals ``expected``; AssertionError with the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if value == expected:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: {value!r} != {expected!r} after {timeout}s")
        time.sleep(0.05)


def wait_for(
    predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = ""
) -> None:
    """Poll a Python ``predicate`` until it is truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s {what}")
        time.sleep(0.05)


def open_live(user: User, url: str) -> LiveTab:
    """Open ``url`` in a new tab of ``user``; wait until its stream is connected."""
    live = LiveTab(user.open_tab(url))
    live.wait_connected()
    live.expose_module("athena", "athena")
    return live
