"""Issue 13: the supervised loops that serve a whole worker (no sockets)."""

from __future__ import annotations

import logging

import gevent
import pytest

from flask_athena.broker.loops import BACKOFF_CAP, Loop, backoff
from flask_athena.broker.redis import RedisBroker


def test_a_loop_whose_body_dies_is_restarted_and_counted() -> None:
    runs: list[int] = []

    def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        gevent.sleep(60)  # the third run lives

    loop = Loop("test", body)
    loop.start()
    with gevent.Timeout(10):
        while len(runs) < 3:
            gevent.sleep(0.01)
    assert loop.alive
    assert loop.health.restarts == 2
    assert loop.stop(timeout=5)
    assert not loop.alive


def test_stop_kills_and_joins_a_loop_that_never_returns() -> None:
    loop = Loop("sleeper", lambda: gevent.sleep(60))
    loop.start()
    gevent.sleep(0)
    assert loop.alive
    assert loop.stop(timeout=5) is True
    assert not loop.alive and loop.health.restarts == 0
    assert loop.stop() is True  # stopping twice is fine


def test_item_failed_logs_once_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    loop = Loop("writer", lambda: None)
    with caplog.at_level(logging.ERROR, logger="flask_athena"):
        try:
            "\ud800".encode()
        except UnicodeEncodeError as exc:
            loop.item_failed("a write", exc)
    assert loop.health.failed_items == 1
    (record,) = caplog.records
    assert "writer loop dropped a write" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is UnicodeEncodeError


def test_backoff_grows_with_jitter_and_a_cap() -> None:
    assert 0.05 <= backoff(0) <= 0.1
    assert all(backoff(n) <= BACKOFF_CAP for n in range(1, 40))
    assert backoff(30) >= BACKOFF_CAP / 2


def test_regression_an_unencodable_message_took_a_seq_and_reached_the_writer() -> None:
    # Nothing connects: the message is refused before anything is queued.
    broker = RedisBroker("redis://127.0.0.1:1/0", 5.0)
    outbox = broker.create_outbox("page", 10)
    with pytest.raises(UnicodeEncodeError):
        outbox.publish('"\ud800"')
    assert outbox.last_seq == 0
    assert outbox.read(0) == []
    assert broker.health() == []  # no loop was started
