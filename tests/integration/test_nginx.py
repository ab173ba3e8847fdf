"""README's deployment for real: Debian's nginx with deploy/nginx-site.conf over TLS
and HTTP/2, in front of gunicorn started as deploy/flask_athena.service starts
it, driven in Chromium.

Two setups run every test: one host (one gunicorn worker, deploy/athena.env),
and two hosts on Redis behind one upstream, round-robin, no sticky sessions
(deploy/two-hosts/). In the two-host setup gunicorn does not trust 127.0.0.1's
forwarding headers (``--forwarded-allow-ips`` names another address, as when
nginx runs on another machine), so only ``ATHENA_PROXY_HOPS=1`` from the env
file makes the Origin check see ``https``.

Playwright runs in a thread of its own per test (:func:`in_chromium`): the
browser suite's session-wide Playwright owns the main thread's loop.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.integration.deploy_support import (
    DEPLOY,
    Gunicorn,
    Nginx,
    make_certificate,
    read_env_file,
    site_config,
    substitute,
)
from tests.integration.redis_support import RedisServer
from tests.support import OUTPUT, free_port, wait_until

# Chromium with ten tabs and two gunicorn hosts: slow on a shared machine.
pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.timeout(300)]

LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MESSAGES = ".messages li.message"
CONNECTED = "document.documentElement.dataset.athenaStatus === 'connected'"
#: The page's config, as athena.js reads it.
CONFIG = "JSON.parse(document.querySelector('meta[name=athena-config]').content)"


def require(program: str, package: str) -> None:
    # nginx lives in /usr/sbin, outside a non-root user's PATH.
    if shutil.which(program) is None and not os.access(f"/usr/sbin/{program}", os.X_OK):
        reason = f"{program} is not installed (apt-get install -y {package}; tests/run.sh does)"
        if os.environ.get("CI"):
            pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
        pytest.skip(reason)


@dataclass
class Deployment:
    name: str
    nginx: Nginx
    hosts: list[Gunicorn]
    redis: RedisServer | None = None
    #: Everything the tests' browsers reported as an error.
    errors: list[str] = field(default_factory=list)


@pytest.fixture(scope="module", params=["one-host", "two-hosts"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    for program, package in [("nginx", "nginx"), ("chromium", "chromium"), ("openssl", "openssl")]:
        require(program, package)
    name: str = request.param
    tmp = tmp_path_factory.mktemp(f"nginx-{name}")
    cert, key = make_certificate(tmp)
    redis: RedisServer | None = None
    hosts: list[Gunicorn] = []
    nginx: Nginx | None = None
    try:
        if name == "one-host":
            hosts = [Gunicorn("nginx-one-host", read_env_file(DEPLOY / "athena.env"))]
        else:
            redis = RedisServer().start()
            env = read_env_file(DEPLOY / "two-hosts" / "athena.env")
            assert env["ATHENA_BROKER_URL"] == "redis://10.0.0.10:6379/0"
            env["ATHENA_BROKER_URL"] = redis.url
            hosts = [
                # As if nginx were on another machine: gunicorn trusts no
                # X-Forwarded-Proto from 127.0.0.1; ATHENA_PROXY_HOPS must do it.
                Gunicorn(f"nginx-two-hosts-{i}", env, extra_args="--forwarded-allow-ips 192.0.2.1")
                for i in range(2)
            ]
        for host in hosts:
            host.start(tmp)
        https_port = free_port()
        site = site_config([h.port for h in hosts], https_port, free_port(), cert, key)
        nginx = Nginx(tmp, site, https_port, cert).start()
        deployment = Deployment(name, nginx, hosts, redis)
        yield deployment
    finally:
        if nginx is not None:
            nginx.stop()
        for host in hosts:
            host.stop()
        if redis is not None:
            redis.stop()


def in_chromium(scenario: Callable[[Any], None]) -> None:
    """Run ``scenario(browser)`` with a Chromium of its own, in a thread of its own."""
    failure: list[BaseException] = []

    def run() -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as driver:
                browser = driver.chromium.launch(
                    executable_path=shutil.which("chromium"), args=LAUNCH_ARGS
                )
                try:
                    scenario(browser)
                finally:
                    browser.close()
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="chromium", daemon=True)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive(), "the browser scenario did not finish in 240 s"
    if failure:
        raise failure[0]


def new_context(browser: Any) -> Any:
    # The test's certificate is self-signed: trust it as a user trusts a real one.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 900, "height": 700})
    context.set_default_timeout(20_000)
    return context


class User:
    """One tab showing the chat."""

    def __init__(self, context: Any, url: str, errors: list[str]) -> None:
        self.page = context.new_page()
        self.page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
        #: Every event stream the tab opened (reconnects carry ?last=N).
        self.streams: list[str] = []
        self.page.on(
            "request", lambda r: self.streams.append(r.url) if "/events" in r.url else None
        )
        self.page.goto(url + "/chat")
        self.wait_connected()

    def wait_connected(self) -> None:
        self.page.wait_for_function(CONNECTED, timeout=30_000)

    def enter(self, name: str) -> None:
        from playwright.sync_api import expect

        self.page.get_by_label("Your name").fill(name)
        self.page.get_by_role("button", name="Enter the room").click()
        expect(self.page.locator(".room")).to_be_visible()

    def say(self, text: str) -> None:
        box = self.page.get_by_label("Message")
        box.fill(text)
        box.press("Enter")

    def expect_lines(self, lines: list[str], timeout: float = 20_000) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator(MESSAGES)).to_have_text(lines, timeout=timeout)

    def protocol(self) -> str:
        protocol: str = self.page.evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        return protocol

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = self.page.evaluate(CONFIG)
        return config


def requests_of(nginx: Nginx, path_part: str, since: int = 0) -> list[list[str]]:
    """Access log lines (method, uri, status, protocol, upstream) from line ``since``
    on whose uri has ``path_part``."""
    return [line for line in nginx.access_log()[since:] if path_part in line[1]]


def test_two_users_talk_over_http2(deployment: Deployment) -> None:
    url = deployment.nginx.url
    since = len(deployment.nginx.access_log())  # the module's other tests logged before

    def scenario(browser: Any) -> None:
        alice = User(new_context(browser), url, deployment.errors)
        bob = User(new_context(browser), url, deployment.errors)
        assert alice.protocol() == bob.protocol() == "h2"
        alice.enter("alice")
        bob.enter("bob")
        expected: list[str] = []
        for user, name, text in [
            (alice, "alice", "Hi Bob, over TLS and HTTP/2."),
            (bob, "bob", "Hello Alice, through nginx."),
            (alice, "alice", "Ünïcödé ✓"),
            (bob, "bob", "bye"),
        ]:
            user.say(text)
            expected.append(f"{name}: {text}")
            alice.expect_lines(expected)
            bob.expect_lines(expected)
        alice.page.screenshot(path=str(OUTPUT / "screenshots" / f"nginx_{deployment.name}.png"))

    in_chromium(scenario)
    assert deployment.errors == []
    calls = requests_of(deployment.nginx, "/calls", since)
    streams = requests_of(deployment.nginx, "/events", since)
    assert calls and streams
    # Every POST and stream went over HTTP/2 and got through (no 403: Host passed on).
    assert {(line[0], line[2], line[3]) for line in calls} == {("POST", "200", "HTTP/2.0")}
    assert {(line[0], line[3]) for line in streams} == {("GET", "HTTP/2.0")}
    if deployment.name == "two-hosts":
        # Round-robin: both hosts served this chat's requests.
        upstreams = {line[4] for line in calls + streams}
        assert upstreams == {f"127.0.0.1:{h.port}" for h in deployment.hosts}, upstreams


def test_ten_tabs_of_one_browser_all_chat(deployment: Deployment) -> None:
    """Ten event streams and their POSTs from one browser to one host: over
    HTTP/1.1 the seventh tab would wait for a free connection (6 per host);
    over HTTP/2 they share one."""
    url = deployment.nginx.url

    def scenario(browser: Any) -> None:
        context = new_context(browser)
        first = User(context, url, deployment.errors)
        first.enter("tabby")
        # The name is in the session now: the other tabs enter at once.
        tabs = [first] + [User(context, url, deployment.errors) for _ in range(9)]
        from playwright.sync_api import expect

        for tab in tabs:
            expect(tab.page.locator(".room")).to_be_visible()
        for i, tab in enumerate(tabs):
            tab.say(f"from tab {i}")
        # Everybody heard everybody, once each, in one same (the server's) order.
        expected = sorted(f"tabby: from tab {i}" for i in range(10))
        for tab in tabs:
            expect(tab.page.locator(MESSAGES)).to_have_count(10, timeout=30_000)
        seen = [tab.page.locator(MESSAGES).all_text_contents() for tab in tabs]
        assert sorted(seen[0]) == expected
        assert all(lines == seen[0] for lines in seen)
        assert {tab.protocol() for tab in tabs} == {"h2"}

    in_chromium(scenario)
    assert deployment.errors == []


def resumed_after(url: str) -> int:
    """The last message id an event-stream URL resumes after (0: from the start)."""
    query = parse_qs(urlsplit(url).query)
    if "pages" in query:
        (page_and_last,) = query["pages"]
        return min(int(part.rpartition(":")[2]) for part in page_and_last.split(","))
    return int(query.get("last", ["0"])[0])


def test_a_stream_cut_at_nginx_resumes_by_replay(deployment: Deployment) -> None:
    """nginx's worker freezes while the app sends, then dies: what the app wrote to
    nginx never reached the browser, so it must come from the outbox's replay.

    (``nginx -s reload`` does not cut streams: the old worker keeps them until
    ``worker_shutdown_timeout``; a crashed or killed worker cuts them at once.)
    """
    nginx = deployment.nginx
    direct = deployment.hosts[0].url  # carol talks to the app without nginx

    def scenario(browser: Any) -> None:
        alice = User(new_context(browser), nginx.url, deployment.errors)
        carol = User(new_context(browser), direct, deployment.errors)
        alice.enter("alice")
        carol.enter("carol")
        carol.say("before the cut")
        alice.expect_lines(["carol: before the cut"])
        opened = len(alice.streams)
        (worker,) = nginx.workers()
        os.kill(worker, signal.SIGSTOP)
        try:
            during = [f"carol: during the cut {i}" for i in range(3)]
            for line in during:
                carol.say(line.removeprefix("carol: "))
            carol.expect_lines(["carol: before the cut", *during])
        finally:
            os.kill(worker, signal.SIGKILL)  # its connections are reset
        wait_until(lambda: nginx.workers() and nginx.workers() != [worker], timeout=30)
        # Exactly once, in order: replayed from the outbox after reconnecting.
        alice.expect_lines(["carol: before the cut", *during], timeout=40_000)
        reconnects = alice.streams[opened:]
        assert reconnects, "the browser never opened a new stream"
        # Each reconnect asks for what follows the last message seen (a shared
        # stream names it per page: ``pages=<id>:<last>``; one per tab: ``last=``).
        assert all(resumed_after(u) > 0 for u in reconnects), reconnects
        alice.say("after the cut")
        carol.expect_lines(["carol: before the cut", *during, "alice: after the cut"])
        alice.expect_lines(["carol: before the cut", *during, "alice: after the cut"])

    in_chromium(scenario)
    assert deployment.errors == []


def test_a_cross_origin_post_through_nginx_is_refused(deployment: Deployment) -> None:
    nginx = deployment.nginx
    page: dict[str, Any] = {}

    def scenario(browser: Any) -> None:
        context = new_context(browser)
        alice = User(context, nginx.url, deployment.errors)
        alice.enter("alice")
        page.update(alice.config())
        page["cookies"] = {c["name"]: c["value"] for c in context.cookies(nginx.url)}
        # Another origin (the app itself, straight on its port) posts to nginx's
        # with the browser's cookies: a cross-site request forgery.
        attacker = context.new_page()
        attacker.goto(deployment.hosts[0].url + "/healthz")
        attacker.evaluate(
            """async ([url, body]) => {
                await fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
                                  headers: {"Content-Type": "text/plain"}, body});
            }""",
            [nginx.url + page["calls"], json.dumps({"messages": []})],
        )
        alice.say("still here")
        alice.expect_lines(["alice: still here"])

    in_chromium(scenario)
    forged = [line for line in requests_of(nginx, page["calls"]) if line[2] != "200"]
    assert [(line[0], line[2]) for line in forged] == [("POST", "403")]

    # The same POST with the page's cookie and token: refused for its Origin
    # only, as the same request from the page's own origin shows.
    def post(origin: str) -> requests.Response:
        ack = {"ack": 0, "messages": []}  # acknowledges nothing new: harmless
        return requests.post(
            nginx.url + page["calls"],
            data=json.dumps(ack),
            headers={
                "Content-Type": "application/json",
                "Origin": origin,
                "X-Athena-Token": page["token"],
            },
            cookies=page["cookies"],
            timeout=10,
            verify=str(nginx.cert),
        )

    refused = post("https://evil.example")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "Cross-origin" in refused.json()["error"]["message"]
    assert post(nginx.url).status_code == 200
    assert deployment.errors == []


def test_nginx_defaults_refuse_every_post_and_the_app_says_why(
    tmp_path: Path,
) -> None:
    """What a newcomer had: nginx's default Host (the upstream's name), no
    ATHENA_PROXY_HOPS, nginx on another machine. Every POST is refused, and
    the app logs, once, what to change."""
    for program, package in [("nginx", "nginx"), ("openssl", "openssl")]:
        require(program, package)
    cert, key = make_certificate(tmp_path)
    env = read_env_file(DEPLOY / "athena.env")
    env["ATHENA_PROXY_HOPS"] = "0"
    app = Gunicorn("nginx-misconfigured", env, extra_args="--forwarded-allow-ips 192.0.2.1")
    nginx: Nginx | None = None
    try:
        app.start(tmp_path)
        https_port = free_port()
        site = site_config([app.port], https_port, free_port(), cert, key)
        site = substitute(site, {"proxy_set_header Host $http_host;": ""})
        nginx = Nginx(tmp_path, site, https_port, cert).start()
        # verify= on each request: a Session's own is overridden by REQUESTS_CA_BUNDLE.
        with requests.Session() as browser:
            text = browser.get(nginx.url + "/chat", timeout=10, verify=str(cert)).text
            meta = text.split('name="athena-config" content="')[1].split('"')[0]
            config = json.loads(html.unescape(meta))
            statuses = []
            for seq in (1, 1):
                call = {"seq": seq, "type": "call", "widget": 1, "method": "setUsername",
                        "args": ["newcomer"], "kwargs": {}}  # fmt: skip
                answer = browser.post(
                    nginx.url + config["calls"],
                    data=json.dumps({"messages": [call]}),
                    headers={
                        "Content-Type": "application/json",
                        "Origin": nginx.url,
                        "Sec-Fetch-Site": "same-origin",
                        "X-Athena-Token": config["token"],
                    },  # fmt: skip
                    timeout=10,
                    verify=str(cert),
                )
                statuses.append(answer.status_code)
        assert statuses == [403, 403]
        wait_until(lambda: "Behind a proxy?" in app.log(), timeout=10)
        assert app.log().count("Behind a proxy?") == 1
        assert f"'{nginx.url}'" in app.log()
    finally:
        if nginx is not None:
            nginx.stop()
        app.stop()
