"""Limits a client cannot bypass by dropping its cookie (DESIGN §11, issue 13).

Pages and streams are counted per client address and per worker as well as
per session; outboxes are bounded in bytes as well as messages.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena.broker.memory import MemoryOutbox
from flask_athena.limits import client_key
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, state_of


def client(app: Flask, address: str = "192.0.2.1", **headers: str) -> AthenaClient:
    """A cookieless browser at ``address`` (every AthenaClient is a new session)."""
    flask = app.test_client()
    flask.environ_base["REMOTE_ADDR"] = address
    for name, value in headers.items():
        flask.environ_base[f"HTTP_{name.upper()}"] = value
    return AthenaClient(app, flask)


def open_page(app: Flask, address: str = "192.0.2.1", **headers: str) -> TestPage:
    return client(app, address, **headers).open()


def get_status(app: Flask, address: str = "192.0.2.1") -> tuple[int, Any]:
    response = client(app, address).flask.get("/")
    return response.status_code, response.get_json(silent=True)


def stream_status(page: TestPage) -> tuple[int, Any]:
    response = page.client.flask.get(page.config["events"], buffered=False)
    try:
        return response.status_code, response.get_json(silent=True)
    finally:
        response.close()


@pytest.fixture
def app_with(make_app: Callable[..., Flask]) -> Callable[..., Flask]:
    return lambda **config: make_app(lambda: [Recorder()], **config)


# -- pages ----------------------------------------------------------------------


def test_cookieless_page_flood_evicts_its_own_oldest_pages(app_with: Callable[..., Flask]) -> None:
    # What broke: the per-session limit did nothing against clients that
    # never send the cookie back; 600 GETs held 600 pages.
    app = app_with(ATHENA_MAX_PAGES_PER_CLIENT=3)
    flood = [open_page(app) for _ in range(10)]
    state = state_of(app)
    assert set(state.pages) == {page.id for page in flood[-3:]}
    assert state.limits.client_pages.keys() == {"192.0.2.1"}
    # Another client is not touched by it.
    other = open_page(app, "192.0.2.2")
    assert other.call(1, "echo", "fine") == "fine"
    assert len(state.pages) == 4


def test_client_page_limit_with_every_page_streaming_is_429(
    app_with: Callable[..., Flask],
) -> None:
    app = app_with(ATHENA_MAX_PAGES_PER_CLIENT=2)
    pages = [open_page(app) for _ in range(2)]
    for page in pages:
        page.connect()
    status, body = get_status(app)
    assert (status, body["error"]["code"]) == (429, "too-many-pages")
    assert "client address" in body["error"]["message"]
    assert get_status(app, "192.0.2.2")[0] == 200
    for page in pages:
        page.disconnect()


def test_worker_page_limit_evicts_the_oldest_idle_page_of_anyone(
    app_with: Callable[..., Flask],
) -> None:
    app = app_with(ATHENA_MAX_PAGES=3)
    live = open_page(app, "192.0.2.1")
    live.connect()
    idle = [open_page(app, f"198.51.100.{n}") for n in range(1, 6)]
    state = state_of(app)
    assert set(state.pages) == {live.id, idle[-2].id, idle[-1].id}
    assert live.call(1, "echo", "still here") == "still here"
    live.disconnect()


def test_worker_page_limit_with_every_page_streaming_is_429(
    app_with: Callable[..., Flask],
) -> None:
    app = app_with(ATHENA_MAX_PAGES=2)
    pages = [open_page(app, f"192.0.2.{n}") for n in (1, 2)]
    for page in pages:
        page.connect()
    status, body = get_status(app, "192.0.2.3")
    assert (status, body["error"]["code"]) == (429, "too-many-pages")
    for page in pages:
        page.disconnect()
    assert get_status(app, "192.0.2.3")[0] == 200


def test_closed_pages_leave_the_client_tables(app_with: Callable[..., Flask]) -> None:
    app = app_with()
    pages = [open_page(app) for _ in range(3)]
    for page in pages:
        assert page.close() == 204
    limits = state_of(app).limits
    assert limits.client_pages == {}
    assert limits.page_clients == {}


# -- streams ---------------------------------------------------------------------


def test_stream_exhaustion_by_one_client_is_429_and_others_still_stream(
    app_with: Callable[..., Flask],
) -> None:
    # What broke: fresh sessions x 32 streams each held every connection.
    app = app_with(ATHENA_MAX_STREAMS_PER_CLIENT=3)
    greedy = [open_page(app) for _ in range(4)]
    for page in greedy[:3]:
        page.connect()
    status, body = stream_status(greedy[3])
    assert (status, body["error"]["code"]) == (429, "too-many-streams")
    assert "client address" in body["error"]["message"]
    other = open_page(app, "192.0.2.2")
    other.connect()
    # A stream that ends frees its place.
    greedy[0].disconnect()
    greedy[3].connect()
    assert state_of(app).limits.client_streams == {"192.0.2.1": 3, "192.0.2.2": 1}
    for page in [*greedy, other]:
        page.disconnect()
    assert state_of(app).limits.client_streams == {}


def test_worker_stream_limit_is_429(app_with: Callable[..., Flask]) -> None:
    app = app_with(ATHENA_MAX_STREAMS=2)
    pages = [open_page(app, f"192.0.2.{n}") for n in (1, 2, 3)]
    pages[0].connect()
    pages[1].connect()
    status, body = stream_status(pages[2])
    assert (status, body["error"]["code"]) == (429, "too-many-streams")
    pages[0].disconnect()
    pages[2].connect()
    pages[1].disconnect()
    pages[2].disconnect()


def test_forwarded_for_counts_only_behind_trusted_hops(app_with: Callable[..., Flask]) -> None:
    # Without ATHENA_PROXY_HOPS a forged X-Forwarded-For buys no fresh quota.
    app = app_with(ATHENA_MAX_PAGES_PER_CLIENT=2)
    for n in range(5):
        open_page(app, "10.0.0.1", X_Forwarded_For=f"203.0.113.{n}")
    assert state_of(app).limits.client_pages.keys() == {"10.0.0.1"}
    assert len(state_of(app).pages) == 2
    # Behind one trusted proxy, each forwarded client has its own quota.
    app = app_with(ATHENA_MAX_PAGES_PER_CLIENT=2, ATHENA_PROXY_HOPS=1)
    for n in range(5):
        open_page(app, "10.0.0.1", X_Forwarded_For=f"203.0.113.{n}")
    assert len(state_of(app).limits.client_pages) == 5


@pytest.mark.parametrize(
    "address, key",
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
        ("not:an:address", "not:an:address"),
    ],
)
def test_ipv6_clients_are_counted_per_64(address: str, key: str) -> None:
    assert client_key(address) == key


# -- outbox bytes -----------------------------------------------------------------


def test_outbox_is_bounded_in_bytes_as_well_as_messages() -> None:
    # What broke: 1,000 messages of a whole member list each, per page.
    outbox = MemoryOutbox(size=1000, max_bytes=4096)
    for n in range(100):
        outbox.publish(f'"{n:04d}{"x" * 500}"')
    assert outbox.nbytes <= 4096
    assert outbox.last_seq == 100
    assert outbox.read(0) is None  # the oldest were dropped: gone, not a gap
    kept = outbox.read(100 - len(outbox))
    assert kept is not None and kept[-1].startswith(b"id: 100\n")
    outbox.ack(100)
    assert (len(outbox), outbox.nbytes) == (0, 0)


def test_outbox_keeps_the_newest_message_whatever_its_size() -> None:
    outbox = MemoryOutbox(size=10, max_bytes=1024)
    outbox.publish('"small"')
    outbox.publish('"' + "y" * 5000 + '"')
    assert len(outbox) == 1 and outbox.read(1) is not None


def test_outbox_bytes_config_reaches_each_page(app_with: Callable[..., Flask]) -> None:
    app = app_with(ATHENA_OUTBOX_BYTES=2048)
    page = open_page(app)
    for _ in range(20):
        page.call(1, "ping_back", "z" * 300)
    assert page.live.outbox.nbytes <= 2048  # type: ignore[attr-defined]


def test_a_closed_outbox_keeps_nothing() -> None:
    outbox = MemoryOutbox(size=10, max_bytes=1024)
    outbox.publish('"a"')
    outbox.close()
    assert outbox.publish('"b"') == 2
    outbox.ack(2)
    assert (len(outbox), outbox.nbytes, outbox.read(0)) == (0, 0, None)
