"""The shared event stream with Redis: pages of one session owned by different
workers, served together on one connection by any worker (DESIGN §4, §9)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from flask_athena.broker.redis_common import out_key, page_key
from tests.integration.redis_support import (
    Page,
    RedisServer,
    connection,
    connection_to,
    redis_server,
)
from tests.protocol_client import SSEParser
from tests.support import LiveServer, wait_until

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[LiveServer]:
    env = {
        "ATHENA_BROKER_URL": redis_server.url,
        "ATHENA_HEARTBEAT": "0.5",
        "ATHENA_PAGE_TIMEOUT": "120",  # pages wait for the stream while others open
        "ATHENA_CALL_TIMEOUT": "5",
        "SECRET_KEY": "flask-athena-shared-stream-tests",
    }
    server = LiveServer("tests.apps.redis_app:app", "shared-stream-redis", workers=3, env=env)
    server.start()
    yield server
    server.stop()


class SharedReader(threading.Thread):
    """Reads ``GET <prefix>/events?pages=...`` on a worker other than ``avoid``."""

    def __init__(self, pages: list[Page], avoid: int) -> None:
        super().__init__(daemon=True)
        self.pages = pages
        self.avoid = avoid
        self.by_page: dict[str, list[tuple[int, Any]]] = {p.id: [] for p in pages}
        self.served_by = 0
        self.stopping = False

    def run(self) -> None:
        base = self.pages[0].base
        session, self.served_by = connection_to(
            base, self.pages[0].cookies, lambda pid: pid != self.avoid
        )
        query = ",".join(f"{p.id}:0" for p in self.pages)
        with session:
            response = session.get(
                f"{base}/_athena/events?pages={query}", stream=True, timeout=(10, 30)
            )
            assert response.status_code == 200
            parser = SSEParser()
            for chunk in response.iter_content(None):
                for event in parser.feed(chunk):
                    if event.id is not None:
                        page, _, data = event.data.partition("\n")
                        self.by_page[page].append((int(event.id), json.loads(data)))
                if self.stopping:
                    return

    def heard(self, page: Page) -> list[Any]:
        return [m["args"][1] for _, m in self.by_page[page.id] if m.get("method") == "hear"]


def test_pages_of_several_workers_on_one_shared_stream_each_message_once_in_order(
    server: LiveServer,
) -> None:
    # Tabs of one browser: two on different workers, four wherever they land.
    first = Page(server.url)
    pages = [first, Page(server.url, cookies=first.cookies, pick=lambda pid: pid != first.owner)]
    with ThreadPoolExecutor(4) as pool:
        pages += pool.map(lambda _: Page(server.url, cookies=first.cookies), range(4))
    reader = SharedReader(pages, avoid=first.owner)
    reader.start()
    try:
        # Every page joins the room in connected(), run on its owner when the
        # shared stream attaches it.
        wait_until(lambda: reader.served_by != 0, timeout=10)
        time.sleep(1.0)
        texts = [f"m{i}" for i in range(6)]
        for i, text in enumerate(texts):
            pages[i % len(pages)].call("shout", text)
        wait_until(lambda: all(len(reader.heard(p)) >= len(texts) for p in pages), timeout=15)
        time.sleep(0.3)
        for page in pages:
            assert reader.heard(page) == texts  # once each, in order, on every page
            ids = [i for i, _ in reader.by_page[page.id]]
            assert ids == list(range(1, len(ids) + 1))
    finally:
        reader.stopping = True
        for page in pages:
            page.close()
        reader.join(timeout=10)


def test_a_page_of_another_session_is_refused_on_any_worker(server: LiveServer) -> None:
    mine, theirs = Page(server.url), Page(server.url)
    for _ in range(3):  # whichever worker takes it (owner or not)
        session, _ = connection(server.url, mine.cookies)
        with session:
            response = session.get(
                f"{server.url}/_athena/events?pages={mine.id}:0,{theirs.id}:0",
                stream=True,
                timeout=(5, 5),
            )
            try:
                assert response.status_code == 403, response.status_code
            finally:
                response.close()
    mine.close()
    theirs.close()


def read_shared(page: Page, last: int, count: int, avoid: int) -> tuple[list[int], list[Any]]:
    """Open a shared stream for ``page`` from ``last`` on a worker other than
    ``avoid``; read until ``count`` messages or a ``gone``. ``(ids, gones)``."""
    session, _ = connection_to(page.base, page.cookies, lambda pid: pid != avoid)
    ids: list[int] = []
    gones: list[Any] = []
    with session:
        response = session.get(
            f"{page.base}/_athena/events?pages={page.id}:{last}", stream=True, timeout=(10, 15)
        )
        try:
            assert response.status_code == 200
            parser = SSEParser()
            for chunk in response.iter_content(None):
                for event in parser.feed(chunk):
                    if event.event == "gone":
                        gones.append(json.loads(event.data))
                    elif event.id is not None:
                        ids.append(int(event.id))
                if len(ids) >= count or gones:
                    break
        finally:
            response.close()
    return ids, gones


def test_a_shared_stream_on_another_worker_acknowledges_nothing_so_a_tab_behind_its_leader_replays(
    server: LiveServer, redis_server: RedisServer
) -> None:
    # The leader tab asks from what it relayed; the page's tab may have less
    # (relays in flight when the leader closed). A non-owner serving the
    # shared stream used to trim the page's Redis stream to the leader's id:
    # the next leader, asking from the tab's own id, found it trimmed and the
    # tab went gone. Only the tab's own POSTs acknowledge.
    page = Page(server.url)
    assert read_shared(page, 0, 0, avoid=page.owner) == ([], [])  # attached once: connected()
    for n in range(6):
        page.call("ping_back", f"m{n}")
    assert read_shared(page, 0, 6, avoid=page.owner) == ([1, 2, 3, 4, 5, 6], [])
    assert read_shared(page, 6, 0, avoid=page.owner) == ([], [])  # the leader relayed 6
    # The tab had 3: every message after it, once, in order.
    assert read_shared(page, 3, 3, avoid=page.owner) == ([4, 5, 6], [])
    # The tab acknowledges 5 in its own POST (to whichever worker): the
    # owner forgets 1..5 and records the ack; a leader asking from before it
    # (an attach the tab sent before those relays) starts after it.
    session, _ = connection(server.url, page.cookies)
    with session:
        response = session.post(
            server.url + page.config["calls"],
            data=json.dumps({"ack": 5, "messages": []}),
            headers={
                "Content-Type": "application/json",
                "Origin": server.url,
                "X-Athena-Token": page.config["token"],
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
    assert read_shared(page, 2, 1, avoid=page.owner) == ([6], [])
    # The attach on another worker wrote the owner's copy to Redis (the
    # mirror): the ack recorded, only message 6 kept.
    redis = redis_server.client()
    assert redis.hget(page_key(page.id), "acked") == "5"
    assert [entry_id for entry_id, _ in redis.xrange(out_key(page.id))] == ["6-0"]
    page.call("ping_back", "m6")
    assert read_shared(page, 5, 2, avoid=page.owner) == ([6, 7], [])
    page.close()
