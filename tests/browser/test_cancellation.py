"""Cancellation in both directions, in Chromium, Firefox and WebKit (``tests/apps/browser_app.py``).

Browser → server: ``callRemoteWithOptions(..., {signal})``. A call not sent
yet is dropped and never runs; a call already sent runs on the server exactly
once and its answer is ignored; either way the promise rejects at once with
the signal's reason. "At once" is shown without a clock: the server's
``held_count`` holds its call until the test releases it, and the promise has
rejected while the server still holds the call (``GET /control/stats``).
Server → browser: ``RemoteCall.cancel()`` aborts the JS method's
``Athena.callSignal()`` and its answer is never sent (the page's own
``fetch`` is watched: the answers lane sends in order, so once a later
answer reached the server, an earlier one would have been sent first).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.engines import User
from tests.browser.helpers import get_json, post_json
from tests.browser.live import LiveTab, open_live, wait_for
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
    post_json(server.url + "/control/release")  # a test that failed midway holds none
    assert not live.errors, live.errors


def stats(server: LiveServer) -> dict[str, Any]:
    stats: dict[str, Any] = get_json(server.url + "/control/stats")
    return stats


def hold(server: LiveServer, page: LiveTab, signal: bool) -> None:
    """Start ``held_count`` from the page (with an AbortController of
    ``window.held`` if ``signal``); return once the server holds it."""
    page.run(
        f"""
        const controller = new AbortController();
        const options = {"{signal: controller.signal}" if signal else "{}"};
        const call = widget({PROBE}).callRemoteWithOptions('held_count', [], {{}}, options);
        window.held = {{controller, outcome: call.then((ok) => ({{ok}}), (e) => ({{
            name: e && e.name, message: e && e.message}}))}};
        """
    )
    wait_for(lambda: stats(server)["holding"] == 1, what="the server holds the call")


def test_aborting_a_queued_call_drops_it_unsent(server: LiveServer, probe_page: LiveTab) -> None:
    runs = stats(server)["slow_runs"]  # the app's counter, shared by this module's tests
    # One sequenced POST at a time: while held_count runs, the second call
    # waits in the queue, unsent, and is aborted there.
    hold(server, probe_page, signal=False)
    outcome = probe_page.run(
        f"""
        const controller = new AbortController();
        const queued = widget({PROBE}).callRemoteWithOptions(
            'slow_count', [0], {{}}, {{signal: controller.signal}});
        const queuedAtAbort = Athena.page.queued;
        controller.abort();
        const error = await queued.then(() => null, (e) => e);
        return {{queuedAtAbort, queuedAfter: Athena.page.queued, name: error && error.name}};
        """
    )
    assert outcome == {"queuedAtAbort": 1, "queuedAfter": 0, "name": "AbortError"}
    # At once, not after the running call: the server still holds it.
    now = stats(server)
    assert (now["holding"], now["slow_runs"]) == (1, runs)
    post_json(server.url + "/control/release")
    assert probe_page.run("return await window.held.outcome") == {"ok": runs + 1}
    # The dropped call never ran, and left no gap: the next call works.
    assert stats(server)["slow_runs"] == runs + 1
    assert probe_page.run(f"return await widget({PROBE}).callRemote('add_numbers', 1, 2)") == 3


def test_aborting_a_sent_call_rejects_at_once_and_it_runs_once(
    server: LiveServer, probe_page: LiveTab
) -> None:
    runs = stats(server)["slow_runs"]
    hold(server, probe_page, signal=True)  # sent, running on the server
    outcome = probe_page.run(
        """
        window.held.controller.abort(new Error('user went elsewhere'));
        return await window.held.outcome;
        """
    )
    assert outcome == {"name": "Error", "message": "user went elsewhere"}  # the signal's reason
    # Not after the call ends: the server still holds it.
    now = stats(server)
    assert (now["holding"], now["slow_runs"]) == (1, runs)
    post_json(server.url + "/control/release")
    # The server still ran it exactly once; the calls after it wait for it.
    assert probe_page.run(f"return await widget({PROBE}).callRemote('slow_count', 0)") == runs + 2
    assert stats(server)["slow_runs"] == runs + 2


def test_an_already_aborted_signal_sends_nothing(server: LiveServer, probe_page: LiveTab) -> None:
    runs = stats(server)["slow_runs"]
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
    assert probe_page.run(f"return await widget({PROBE}).callRemote('slow_runs')") == runs


# Records the body of every POST the page sends from now on (athena.js calls
# the global fetch at each request).
WATCH_POSTS = """
window.posted = [];
const original = window.fetch;
window.fetch = (url, init) => {
  if (init && init.method === 'POST') window.posted.push(String(init.body));
  return original(url, init);
};
"""


def test_server_cancel_aborts_the_js_signal_and_no_answer_is_sent(probe_page: LiveTab) -> None:
    probe_page.run(WATCH_POSTS)
    reply = probe_page.run(f"return await widget({PROBE}).callRemote('ask_and_cancel', 0.3)")
    assert reply["cancelled"] is True and reply["again"] is False
    assert reply["error"] == "CallCancelled"
    probe_page.wait("window.cancelSeen !== undefined")
    seen = probe_page.tab.js("window.cancelSeen")
    assert seen["name"] == "AbortError"
    assert "cancelled" in seen["message"]
    # The JS method resolved after the abort. Its answer would go on the
    # answers lane, which sends in order: once the answer to a later server
    # call has reached the server, an earlier answer would have been sent.
    ask = f"return await widget({PROBE}).callRemote('ask', 'double', [21])"
    assert probe_page.run(ask) == {"ok": 42}
    sent = [m for body in probe_page.tab.js("window.posted") for m in json.loads(body)["messages"]]
    answers = [m for m in sent if m["type"] == "result"]
    assert [m.get("ok") for m in answers] == [42], answers
