"""Cancellation in both directions, in Chromium, Firefox and WebKit (``tests/apps/browser_app.py``).

Browser → server: ``callRemoteWithOptions(..., {signal})``. A call not sent
yet is dropped and never runs; a call already sent runs on the server exactly
once and its answer is ignored; either way the promise rejects at once with
the signal's reason. Server → browser: ``RemoteCall.cancel()`` aborts the
JS method's ``Athena.callSignal()`` and its answer is never sent (Chromium
only: it watches the page's requests through Playwright).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.engines import User
from tests.browser.helpers import LivePageHandle
from tests.browser.helpers import open_live as open_live_chromium
from tests.browser.live import LiveTab, open_live
from tests.support import LiveServer

pytestmark = pytest.mark.browser

PROBE = 1


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(BROWSER_APP, "cancellation")
    yield server
    server.stop()


@pytest.fixture
def probe_page(server: LiveServer, user: User) -> Iterator[LiveTab]:
    live = open_live(user, server.url + "/core")
    yield live
    assert not live.errors, live.errors


@pytest.fixture
def chromium_probe_page(server: LiveServer, context: Any) -> Iterator[LivePageHandle]:
    handle = open_live_chromium(context, server.url + "/core")
    yield handle
    assert not handle.errors, handle.errors


def slow_runs(page: LiveTab | LivePageHandle) -> int:
    runs: int = page.run(f"return await widget({PROBE}).callRemote('slow_runs')")
    return runs


def test_aborting_a_queued_call_drops_it_unsent(probe_page: LiveTab) -> None:
    runs = slow_runs(probe_page)  # the app's counter, shared by this module's tests
    # One sequenced POST at a time: while slow_count(0.5) runs, the second
    # call waits in the queue, unsent, and is aborted there.
    outcome = probe_page.run(
        f"""
        const probe = widget({PROBE});
        const running = probe.callRemote('slow_count', 0.5);
        await new Promise((r) => setTimeout(r, 50));  // its POST is in flight
        const controller = new AbortController();
        const queued = probe.callRemoteWithOptions(
            'slow_count', [0], {{}}, {{signal: controller.signal}});
        const queuedAtAbort = Athena.page.queued;
        const started = performance.now();
        controller.abort();
        const error = await queued.then(() => null, (e) => e);
        const rejectedAfterMs = performance.now() - started;
        return {{
            queuedAtAbort, queuedAfter: Athena.page.queued, name: error && error.name,
            rejectedAfterMs, first: await running,
        }};
        """
    )
    assert outcome["queuedAtAbort"] == 1 and outcome["queuedAfter"] == 0
    assert outcome["name"] == "AbortError"
    assert outcome["rejectedAfterMs"] < 400  # at once, not after the running call (0.5 s)
    assert outcome["first"] == runs + 1
    # The dropped call never ran, and left no gap: the next call works.
    assert slow_runs(probe_page) == runs + 1
    assert probe_page.run(f"return await widget({PROBE}).callRemote('add_numbers', 1, 2)") == 3


def test_aborting_a_sent_call_rejects_at_once_and_it_runs_once(probe_page: LiveTab) -> None:
    runs = slow_runs(probe_page)
    outcome = probe_page.run(
        f"""
        const controller = new AbortController();
        const call = widget({PROBE}).callRemoteWithOptions(
            'slow_count', [0.6], {{}}, {{signal: controller.signal}});
        await new Promise((r) => setTimeout(r, 150));  // sent, running on the server
        const started = performance.now();
        controller.abort(new Error('user went elsewhere'));
        const error = await call.then(() => null, (e) => e);
        return {{message: error && error.message, rejectedAfterMs: performance.now() - started}};
        """
    )
    assert outcome["message"] == "user went elsewhere"  # the signal's reason
    assert outcome["rejectedAfterMs"] < 300  # not after the call (0.6 s) ends
    # The server still ran it exactly once; the calls after it wait for it.
    assert probe_page.run(f"return await widget({PROBE}).callRemote('slow_count', 0)") == runs + 2
    assert slow_runs(probe_page) == runs + 2


def test_an_already_aborted_signal_sends_nothing(probe_page: LiveTab) -> None:
    runs = slow_runs(probe_page)
    outcome = probe_page.run(
        f"""
        const before = Athena.page.nextSeq;
        const error = await widget({PROBE})
            .callRemoteWithOptions('slow_count', [0], {{}}, {{signal: AbortSignal.abort()}})
            .then(() => null, (e) => e);
        return {{name: error && error.name, seqUsed: Athena.page.nextSeq - before}};
        """
    )
    assert outcome == {"name": "AbortError", "seqUsed": 0}
    assert slow_runs(probe_page) == runs


def test_server_cancel_aborts_the_js_signal_and_no_answer_is_sent(
    chromium_probe_page: LivePageHandle,
) -> None:
    probe_page = chromium_probe_page
    bodies: list[str] = []
    probe_page.page.on(
        "request",
        lambda req: bodies.append(req.post_data or "") if req.method == "POST" else None,
    )
    reply = probe_page.run(f"return await widget({PROBE}).callRemote('ask_and_cancel', 0.3)")
    assert reply["cancelled"] is True and reply["again"] is False
    assert reply["error"] == "CallCancelled"
    probe_page.page.wait_for_function("window.cancelSeen !== undefined", timeout=5000)
    seen = probe_page.page.evaluate("window.cancelSeen")
    assert seen["name"] == "AbortError"
    assert "cancelled" in seen["message"]
    probe_page.page.wait_for_timeout(300)
    # The JS method resolved after the abort, but its answer was not sent.
    assert not [b for b in bodies if '"type":"result"' in b]
