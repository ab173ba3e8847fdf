"""The Redis writer against a real ``redis-server``: runs of messages, in order.

A broadcast queues one message per page; the writer sends a run of them as
one script run (``XADD_MANY``) instead of one ``XADD`` each. What each page's
stream ends up holding must be what the lone ``XADD`` s would have stored:
every message once, in order, around acks and closes, never a stream
recreated for a closed page, and a batch sent again (after a connection
failure) adds nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis

from flask_athena.broker.redis_common import Connection, out_key, page_key
from flask_athena.broker.redis_writer import StreamWriter, Write
from tests.integration.redis_support import RedisServer, redis_server

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module


@dataclass
class Handle:
    """What the writer reads of a page's outbox handle."""

    page_id: str
    #: the oldest seq the owner's copy keeps: the stream is trimmed to it
    first_seq: int = 1
    reader: str | None = None


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def writer(client: redis.Redis) -> StreamWriter:
    writer = StreamWriter({}, lambda page_id: None)
    writer.attach(Connection(client, redis.exceptions, "test-worker", None))
    return writer


def open_page(client: redis.Redis, name: str) -> Any:
    # What the broker does when a page registers: the stream exists (a
    # placeholder entry), so NOMKSTREAM appends to it.
    client.xadd(out_key(name), {"d": ""}, id="0-1")
    return cast(Any, Handle(name))


def stream(client: redis.Redis, name: str) -> list[tuple[str, str]]:
    return [(entry_id, fields["d"]) for entry_id, fields in client.xrange(out_key(name))]


def xadd(handle: Any, seq: int, text: str) -> Write:
    return ("xadd", handle, seq, text)


def test_a_broadcast_run_lands_in_every_stream_in_order(
    client: redis.Redis, writer: StreamWriter
) -> None:
    a, b, c = (open_page(client, name) for name in "abc")
    shared = '{"method":"hear","args":["hi"]}'
    batch = [
        xadd(a, 1, shared),
        xadd(b, 1, shared),
        xadd(c, 1, '{"widget":2}'),  # another widget id: another text
        xadd(a, 2, '{"own":"a"}'),
        xadd(b, 2, shared),
    ]
    writer.write(batch)
    assert stream(client, "a") == [("0-1", ""), ("1-0", shared), ("2-0", '{"own":"a"}')]
    assert stream(client, "b") == [("0-1", ""), ("1-0", shared), ("2-0", shared)]
    assert stream(client, "c") == [("0-1", ""), ("1-0", '{"widget":2}')]


def test_a_run_keeps_its_place_around_acks_and_the_outbox_bound(
    client: redis.Redis, writer: StreamWriter
) -> None:
    a = open_page(client, "a")
    writer.write([xadd(a, n, f"m{n}") for n in (1, 2, 3)] + [("ack", a, 2, "")])
    assert stream(client, "a") == [("3-0", "m3")]  # the ack trimmed what came before it
    a.first_seq = 10  # the owner's copy dropped everything before 10 (its bound)
    writer.write([xadd(a, n, f"m{n}") for n in range(4, 14)])
    assert stream(client, "a") == [(f"{n}-0", f"m{n}") for n in range(10, 14)]


def test_a_closed_page_is_never_recreated_and_a_batch_sent_again_adds_nothing(
    client: redis.Redis, writer: StreamWriter
) -> None:
    a, gone = open_page(client, "a"), open_page(client, "gone")
    writer.write([("close", gone, 0, "")])
    batch = [xadd(a, 1, "x"), xadd(gone, 1, "x"), xadd(a, 2, "y"), xadd(gone, 2, "y")]
    writer.write(batch)
    writer.write(batch)  # the replay after a connection failure
    assert stream(client, "a") == [("0-1", ""), ("1-0", "x"), ("2-0", "y")]
    assert client.exists(out_key("gone")) == 0


def test_a_run_survives_redis_forgetting_the_script(
    client: redis.Redis, writer: StreamWriter
) -> None:
    a, b = open_page(client, "a"), open_page(client, "b")
    writer.write([xadd(a, 1, "x"), xadd(b, 1, "x")])
    client.script_flush()  # a restarted Redis knows no scripts
    writer.write([xadd(a, 2, "y"), xadd(b, 2, "y")])
    assert stream(client, "a") == stream(client, "b") == [("0-1", ""), ("1-0", "x"), ("2-0", "y")]


def test_a_mirror_trims_to_the_owners_copy_and_adds_only_what_redis_lacks(
    client: redis.Redis, writer: StreamWriter
) -> None:
    a = open_page(client, "a")
    writer.write([xadd(a, n, f"m{n}") for n in (1, 2, 3)])
    # The mirror stopped after 3; the owner kept 2..6 (it acked 1) and
    # mirrors again: what it no longer keeps goes, 2 and 3 fail alone, 4..6 land.
    a.first_seq = 2
    writer.write([("mirror", a, 1, "")] + [xadd(a, n, f"m{n}") for n in range(2, 7)])
    assert stream(client, "a") == [(f"{n}-0", f"m{n}") for n in range(2, 7)]
    assert client.hget(page_key("a"), "acked") == "1"
    assert client.ttl(page_key("a")) > 0
    # Everything acked meanwhile: the mirror empties the stream, and a later
    # message is still added (its id is above the stream's top).
    a.first_seq = 7
    writer.write([("mirror", a, 6, ""), xadd(a, 7, "m7")])
    assert stream(client, "a") == [("7-0", "m7")]
