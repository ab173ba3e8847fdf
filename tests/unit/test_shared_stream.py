"""``GET <prefix>/events?pages=...``: one event stream for the pages of several tabs."""

from __future__ import annotations

from typing import Any, Callable

import gevent
import pytest
from flask import Flask

from flask_athena.shared_stream import parse_pages, tag
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, element, first_chunk


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(
        lambda: [Recorder()],
        ATHENA_OUTBOX_SIZE=8,
        ATHENA_HEARTBEAT=0.05,
        ATHENA_SHARED_STREAM=True,
    )


@pytest.fixture
def browser(app: Flask) -> AthenaClient:
    """One browser session: its pages are the tabs."""
    return AthenaClient(app)


def shared(client: AthenaClient, *parts: tuple[TestPage | str, int]) -> Any:
    pages = ",".join(f"{p if isinstance(p, str) else p.id}:{last}" for p, last in parts)
    return client.flask.get(f"/_athena/events?pages={pages}")


def parse_frames(stream: bytes) -> list[dict[str, str]]:
    """The fields of each SSE frame, as written (``retry`` frames included)."""
    events = []
    for block in stream.decode("utf-8").split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = fields[name] + "\n" + value if name in fields else value
        events.append(fields)
    return events


def messages(chunk: bytes) -> list[tuple[str, int, str]]:
    """(page, id, message JSON) of each message in ``chunk``."""
    out = []
    for event in parse_frames(chunk):
        if "id" in event:
            page, _, data = event["data"].partition("\n")
            out.append((page, int(event["id"]), data))
    return out


def test_each_page_replays_from_its_own_last_id_tagged_with_its_page(
    browser: AthenaClient,
) -> None:
    one, two = browser.open(), browser.open()
    for n in range(3):
        element(one).call_remote("hear", f"one-{n}")
        element(two).call_remote("hear", f"two-{n}")
    response = shared(browser, (one, 1), (two, 0))
    try:
        body = iter(response.response)
        chunks = b""
        while len(messages(chunks)) < 5:
            chunks += next(body)
        got = messages(chunks)
        assert [(p, i) for p, i, _ in got if p == one.id] == [(one.id, 2), (one.id, 3)]
        assert [i for p, i, _ in got if p == two.id] == [1, 2, 3]
        assert all(f'"one-{i - 1}"' in data for p, i, data in got if p == one.id)
        assert one.live.stream_attached and two.live.stream_attached
        assert len(one.live.outbox) == 3  # a shared stream's last ids acknowledge nothing
    finally:
        response.close()
    assert not one.live.stream_attached and not two.live.stream_attached


def test_regression_a_stale_last_id_below_the_pages_ack_replays_from_the_ack(
    browser: AthenaClient,
) -> None:
    # A tab's attach can reach a new leader after the tab has received (and
    # acknowledged in its own POST) messages the attach predates. Those are
    # forgotten; asking from before them was "gone: outbox-trimmed" and the
    # tab reloaded. The tab has them, so the stream starts after its ack.
    page = browser.open()
    for n in range(5):
        element(page).call_remote("hear", n)
    assert page.send(ack=3)[0] == 200
    response = shared(browser, (page, 1))
    try:
        body = iter(response.response)
        chunks = b""
        while len(messages(chunks)) < 2:
            chunks += next(body)
        assert b"event: gone" not in chunks
        assert [i for _, i, _ in messages(chunks)] == [4, 5]
    finally:
        response.close()


def test_live_messages_of_every_page_follow_in_order(browser: AthenaClient) -> None:
    pages = [browser.open() for _ in range(3)]
    response = shared(browser, *[(p, 0) for p in pages])
    try:
        body = iter(response.response)
        next(body)
        for n in range(4):
            for page in pages:
                element(page).call_remote("hear", n)
        got: list[tuple[str, int, str]] = []
        while len(got) < 12:
            got += messages(next(body))
        for page in pages:
            assert [i for p, i, _ in got if p == page.id] == [1, 2, 3, 4]
    finally:
        response.close()


def test_a_page_of_another_session_is_refused_and_nothing_is_attached(app: Flask) -> None:
    mine, theirs = AthenaClient(app), AthenaClient(app)
    own, foreign = mine.open(), theirs.open()
    response = shared(mine, (own, 0), (foreign, 0))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden"
    assert not own.live.was_connected and not foreign.live.was_connected


def test_without_a_session_every_page_is_refused(app: Flask, browser: AthenaClient) -> None:
    page = browser.open()
    response = app.test_client().get(f"/_athena/events?pages={page.id}:0")
    assert response.status_code == 403
    assert not page.live.was_connected


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?pages=",
        "?pages=abc",
        "?pages=abc:-1",
        "?pages=abc:1.5",
        "?pages=a:1,,b:2",
        "?pages=a b:1",
    ],
)
def test_bad_pages_parameter_is_400(browser: AthenaClient, query: str) -> None:
    browser.open()
    response = browser.flask.get(f"/_athena/events{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad-request"


def test_parse_pages_refuses_duplicates_and_too_many() -> None:
    assert parse_pages("a:1,b-_9:0", 2) == [("a", 1), ("b-_9", 0)]
    with pytest.raises(Exception, match="twice"):
        parse_pages("a:1,a:2", 5)
    with pytest.raises(Exception, match="At most 2"):
        parse_pages("a:1,b:1,c:1", 2)


def test_an_unknown_page_gets_gone_and_the_others_go_on(browser: AthenaClient) -> None:
    page = browser.open()
    response = shared(browser, ("no-such-page", 0), (page, 0))
    try:
        body = iter(response.response)
        chunks = b""
        while b"event: gone" not in chunks:
            chunks += next(body)
        gone = [e for e in parse_frames(chunks) if e.get("event") == "gone"]
        assert gone == [
            {"event": "gone", "data": '{"page":"no-such-page","reason":"unknown-page"}'}
        ]
        element(page).call_remote("hear", "still here")
        while not messages(chunks):
            chunks += next(body)
        assert [(p, i) for p, i, _ in messages(chunks)] == [(page.id, 1)]
    finally:
        response.close()


def test_a_page_closing_is_gone_for_that_page_only(browser: AthenaClient) -> None:
    one, two = browser.open(), browser.open()
    response = shared(browser, (one, 0), (two, 0))
    try:
        body = iter(response.response)
        next(body)
        one.live.close("closed")
        chunks = b""
        while b"event: gone" not in chunks:
            chunks += next(body)
        assert f'"page":"{one.id}","reason":"closed"'.encode() in chunks
        element(two).call_remote("hear", 1)
        while not messages(chunks):
            chunks += next(body)
        assert [p for p, _, _ in messages(chunks)] == [two.id]
    finally:
        response.close()


def test_one_heartbeat_for_all_pages(browser: AthenaClient) -> None:
    pages = [browser.open() for _ in range(4)]
    response = shared(browser, *[(p, 0) for p in pages])
    try:
        body = iter(response.response)
        assert next(body) == b"retry: 1000\n\n"
        assert parse_frames(next(body)) == [{"event": "heartbeat", "data": "{}"}]
    finally:
        response.close()


def test_a_page_taken_by_another_stream_ends_the_shared_stream(browser: AthenaClient) -> None:
    # The browser's leader tab then reconnects and every page replays from its
    # last id: no page is left silently stalled on a live connection.
    one, two = browser.open(), browser.open()
    response = shared(browser, (one, 0), (two, 0))
    reader = None
    newer = None
    try:
        body = iter(response.response)
        next(body)
        reader = gevent.spawn(list, body)
        gevent.idle()
        newer = browser.flask.get(one.config["events"])
        next(iter(newer.response))
        assert reader.get(timeout=5) is not None  # the shared stream ended by itself
    finally:
        if reader is not None:
            reader.kill(block=True, timeout=1)
        response.close()
        if newer is not None:
            newer.close()
    assert not two.live.stream_attached


def test_a_newer_shared_stream_replaces_the_older(browser: AthenaClient) -> None:
    one, two = browser.open(), browser.open()
    older = shared(browser, (one, 0))
    body = iter(older.response)
    next(body)
    reader = gevent.spawn(list, body)
    newer = None
    try:
        gevent.idle()
        newer = shared(browser, (one, 0), (two, 0))
        first_chunk(newer)
        reader.get(timeout=5)
    finally:
        reader.kill(block=True, timeout=1)
        older.close()


def test_the_config_names_the_shared_stream_per_session(app: Flask) -> None:
    mine, theirs = AthenaClient(app), AthenaClient(app)
    a, b, c = mine.open(), mine.open(), theirs.open()
    assert a.config["shared"]["events"] == "/_athena/events"
    assert a.config["shared"]["key"] == b.config["shared"]["key"]
    assert a.config["shared"]["key"] != c.config["shared"]["key"]
    assert a.live.session_key not in a.config["shared"]["key"]


def test_shared_stream_switched_off(make_app: Callable[..., Flask]) -> None:
    page = AthenaClient(make_app(lambda: [Recorder()], ATHENA_SHARED_STREAM=False)).open()
    assert page.config["shared"] is None


def test_tag_drops_heartbeats_and_retry_and_names_the_page() -> None:
    chunk = b'retry: 1000\n\nid: 4\ndata: {"x":1}\n\nevent: heartbeat\ndata: {}\n\n'
    assert tag("p", chunk) == b'data: p\nid: 4\ndata: {"x":1}\n\n'
    assert tag("p", b'event: gone\ndata: {"reason":"closed"}\n\n') == (
        b'event: gone\ndata: {"page":"p","reason":"closed"}\n\n'
    )


def test_regression_a_reopened_shared_stream_was_refused_while_the_old_one_still_counted(
    make_app: Callable[..., Flask],
) -> None:
    # The leader reopens its stream whenever a tab joins; the old connection
    # is noticed dead only at its next write. Its pages counted against
    # ATHENA_MAX_STREAMS_PER_SESSION until then, so with many tabs the new
    # stream got 429. A newer shared stream of the session now frees them.
    app = make_app(lambda: [Recorder()], ATHENA_MAX_STREAMS_PER_SESSION=5, ATHENA_HEARTBEAT=60)
    client = AthenaClient(app)
    pages = [client.open() for _ in range(3)]
    older = shared(client, *[(p, 0) for p in pages])
    body = iter(older.response)
    next(body)
    reader = gevent.spawn(list, body)
    newer = None
    try:
        gevent.idle()
        newer = shared(client, *[(p, 0) for p in pages])
        assert newer.status_code == 200
        next(iter(newer.response))
        assert reader.get(timeout=5) == []  # the older one ended by itself
        assert all(p.live.stream_attached for p in pages)
        older.close()  # as the WSGI server does once the body ended
        assert client.state.session_streams[pages[0].live.session_key] == 4
    finally:
        reader.kill(block=True, timeout=1)
        older.close()
        if newer is not None:
            newer.close()
    assert not any(p.live.stream_attached for p in pages)


def test_regression_a_tab_asking_from_an_older_id_was_gone_outbox_trimmed(
    browser: AthenaClient,
) -> None:
    # The leader reopened the stream with the id it had relayed (which then
    # acknowledged it) while the relay was still on its way to the tab; the
    # tab, resyncing from the id it had, found its messages trimmed: gone.
    page = browser.open()
    for n in range(3):
        element(page).call_remote("hear", n)
    first_chunk(shared(browser, (page, 3)))
    response = shared(browser, (page, 1))
    try:
        body = iter(response.response)
        chunks = b""
        while len(messages(chunks)) < 2 and b"gone" not in chunks:
            chunks += next(body)
        assert b"gone" not in chunks
        assert [i for _, i, _ in messages(chunks)] == [2, 3]
    finally:
        response.close()
