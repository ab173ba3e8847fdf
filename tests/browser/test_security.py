"""A page of another origin cannot call into a live page, even in the victim's browser.

The victim opens ``/core`` of the test app (so the browser holds its session
cookie); in another tab of the same browser context, a page served by a
second tiny server on another 127.0.0.1 port tries every way a script has to
reach the calls endpoint with the victim's cookies: a CORS ``fetch`` with
``credentials: "include"`` (even knowing the page id and token, as if they
had leaked), ``no-cors`` fetches, ``sendBeacon``, a classic form POST, a
beacon to the close endpoint, and an ``EventSource`` on the page's stream.

Both origins are on 127.0.0.1, so they are *same-site*: ``SameSite=Lax``
cookies go along and only the server's origin check stands in the way.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from tests.browser.conftest import BROWSER_APP, start_server
from tests.browser.helpers import expect, get_json, open_live, screenshot
from tests.support import LiveServer

pytestmark = pytest.mark.browser

EVIL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>working</title><link rel="icon" href="data:,"></head>
<body>
<h1>A page of another origin</h1>
<pre id="out"></pre>
<iframe name="sink" title="form target"></iframe>
<script>
const target = JSON.parse(decodeURIComponent(location.hash.slice(1)));
const call = JSON.stringify({messages: [
  {seq: target.seq, type: "call", widget: 1, method: "poke", args: [], kwargs: {}}]});
const results = {};
async function attempt(name, fn) {
  if (!target.attempts.includes(name)) return;
  try { results[name] = await fn(); } catch (e) { results[name] = `${e.name}: ${e.message}`; }
}
(async () => {
  await attempt("corsFetch", async () => {
    const r = await fetch(target.calls, {method: "POST", credentials: "include", body: call,
      headers: {"Content-Type": "application/json", "X-Athena-Token": target.token}});
    return `read ${r.status}: ${await r.text()}`;
  });
  await attempt("noCorsFetch", async () => {
    const r = await fetch(target.calls, {method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "application/json"}, body: call});
    return `opaque:${r.type}`;
  });
  await attempt("noCorsTextFetch", async () => {
    const r = await fetch(target.calls, {method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "text/plain"}, body: call});
    return `opaque:${r.type}`;
  });
  await attempt("callsBeacon", () => navigator.sendBeacon(target.calls, call));
  await attempt("closeBeacon",
    () => navigator.sendBeacon(target.close, JSON.stringify({token: target.token})));
  await attempt("formPost", () => new Promise((resolve) => {
    const form = Object.assign(document.createElement("form"),
      {method: "POST", action: target.calls, enctype: "text/plain", target: "sink"});
    const field = Object.assign(document.createElement("input"),
      {type: "hidden", name: call, value: ""});
    form.append(field);
    document.body.append(form);
    document.querySelector("iframe").addEventListener("load", () => resolve("submitted"),
      {once: true});
    form.submit();
  }));
  await attempt("eventSource", () => new Promise((resolve) => {
    const es = new EventSource(target.events, {withCredentials: true});
    let messages = 0;
    es.onmessage = () => { messages += 1; };
    es.addEventListener("heartbeat", () => { messages += 1; });
    es.onerror = () => { resolve(`error:${es.readyState}:${messages}`); es.close(); };
  }));
  document.getElementById("out").textContent = JSON.stringify(results, null, 2);
  window.results = results;
  document.title = "done";
})();
</script>
</body></html>
"""


class _EvilHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's spelling)
        body = EVIL_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    server = start_server(BROWSER_APP, "security")
    yield server
    server.stop()


@pytest.fixture
def evil_origin() -> Iterator[str]:
    """Another origin on 127.0.0.1 (another port) serving the attacker's page."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EvilHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="evil-origin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


class Victim:
    """The victim's live page, and the other origin's tab in the same browser."""

    def __init__(self, server: LiveServer, evil_origin: str, context: Any) -> None:
        self.server = server
        self.evil_origin = evil_origin
        self.context = context
        self.page = open_live(context, server.url + "/core")
        self.page.page.evaluate(
            """() => {
                window.statusEvents = [];
                for (const type of ['athena:disconnected', 'athena:reconnected', 'athena:gone']) {
                    document.addEventListener(type, () => window.statusEvents.push(type));
                }
            }"""
        )
        #: (method, url, status) of the app's answers to the other origin's tab.
        self.answers: list[tuple[str, str, int]] = []

    def pokes(self) -> int:
        pokes: int = get_json(self.server.url + "/control/stats")["pokes"]
        return pokes

    def attack(self, attempts: list[str], name: str) -> dict[str, Any]:
        """Open the other origin's page, let it try ``attempts``; return what it saw."""
        config = self.page.page.evaluate(
            "JSON.parse(document.querySelector('meta[name=athena-config]').content)"
        )
        base = self.server.url
        target = {
            "attempts": attempts,
            "calls": base + config["calls"],
            "close": base + config["close"],
            "events": base + config["events"],
            "token": config["token"],  # as if it had leaked: the origin check must still refuse
            "seq": self.page.run("return Athena.page.nextSeq;"),
        }
        evil = self.context.new_page()
        evil.on(
            "response",
            lambda r: (
                self.answers.append((r.request.method, r.url, r.status))
                if r.url.startswith(base + "/_athena/")
                else None
            ),
        )
        evil.goto(f"{self.evil_origin}/evil.html#{quote(json.dumps(target))}")
        expect(evil).to_have_title("done", timeout=15_000)
        results: dict[str, Any] = evil.evaluate("window.results")
        screenshot(evil, name)
        assert sorted(results) == sorted(attempts), results
        return results

    def check_unharmed(self, pokes: int) -> None:
        """The canary did not move; the page still works both ways, never disturbed."""
        assert self.pokes() == pokes
        assert self.page.run("return await widget(1).callRemote('poke')") == pokes + 1
        assert self.page.run("return await widget(1).callRemote('ask', 'double', [4])") == {"ok": 8}
        assert self.page.status() == "connected"
        assert self.page.page.evaluate("window.statusEvents") == []
        unexpected = [e for e in self.page.errors if "Failed to load resource" not in e]
        assert not unexpected, unexpected


@pytest.fixture
def victim(server: LiveServer, evil_origin: str, context: Any) -> Victim:
    return Victim(server, evil_origin, context)


def test_another_origin_cannot_call_into_a_live_page(victim: Victim) -> None:
    # The exposed method works for its own page: the canary moves.
    before = victim.pokes()
    assert victim.page.run("return await widget(1).callRemote('poke')") == before + 1
    assert victim.pokes() == before + 1

    results = victim.attack(
        ["corsFetch", "noCorsFetch", "noCorsTextFetch", "callsBeacon", "closeBeacon", "formPost"],
        "security_other_origin_posts",
    )
    # The CORS fetch never gets to send its call: the preflight is refused.
    assert results["corsFetch"].startswith("TypeError"), results
    # The others cannot read an answer, but were sent: the server refused them.
    assert results["noCorsFetch"] == results["noCorsTextFetch"] == "opaque:opaque"
    assert results["callsBeacon"] is True and results["closeBeacon"] is True
    assert results["formPost"] == "submitted"
    posts = [(url, status) for method, url, status in victim.answers if method == "POST"]
    assert len(posts) >= 4, posts  # both no-cors fetches, the form, a beacon at least
    assert all(status == 403 for _, status in posts), posts

    # The exposed method never ran for them, and the page (not closed by the
    # beacon) lives on.
    victim.check_unharmed(pokes=before + 1)


def test_regression_another_origins_event_source_replaced_the_pages_stream(
    victim: Victim,
) -> None:
    # Same-site pages send the session cookie with a cross-origin
    # EventSource; the server used to attach it, ending the page's own
    # stream (and honouring its ?last=, which trims the outbox).
    before = victim.pokes()
    results = victim.attack(["eventSource"], "security_other_origin_stream")
    # readyState 2 (CLOSED), no message or heartbeat ever read.
    assert results["eventSource"] == "error:2:0", results
    victim.check_unharmed(pokes=before)
