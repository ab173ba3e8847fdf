"""Issue 13: the supervised loops that serve a whole worker (no sockets)."""

from __future__ import annotations

import logging

import gevent
import pytest
from gevent.event import Event

from flask_athena.broker.loops import BACKOFF_CAP, Loop, backoff
from flask_athena.broker.redis_poller import poll_answer
from flask_athena.broker.redis_subscriber import Replies, WakeUps


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


def test_poll_answer_tells_gone_trimmed_and_fresh_frames_apart() -> None:
    assert poll_answer(None, [], 0) == (None, None)  # no page
    assert poll_answer("2", [("5-0", {"d": "x"})], 3) == (2, None)  # 4 was trimmed
    assert poll_answer("0", [("4-0", {"d": '"x"'})], 3) == (0, [b'id: 4\ndata: "x"\n\n'])
    assert poll_answer("1", [], 3) == (1, [])


def test_wakeups_wake_the_events_of_one_page_until_discarded() -> None:
    wakeups, mine, other = WakeUps(), Event(), Event()
    wakeups.add("p", mine)
    wakeups.add("q", other)
    wakeups.wake("p")
    assert mine.is_set() and not other.is_set()
    mine.clear()
    wakeups.discard("p", mine)
    wakeups.wake("p")
    assert not mine.is_set()
    wakeups.wake_all()
    assert other.is_set()


def test_replies_resolve_once_and_ignore_unknown_ids() -> None:
    replies = Replies()
    result = replies.expect("r1")
    replies.resolve("r1", {"status": 200})
    replies.resolve("r1", {"status": 500})  # a duplicate: ignored
    replies.resolve("nobody", {"status": 200})
    assert result.get(block=False) == {"status": 200}
    replies.forget("r1")
