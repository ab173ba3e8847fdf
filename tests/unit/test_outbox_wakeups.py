"""How an event stream is woken: once per burst, every waiter, never a gap.

A greenlet plays the WSGI server (it takes each chunk the stream body hands
over, as gunicorn writes it), so the chunks seen are the stream's writes.
No sockets, no timing: each test waits on conditions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent
import pytest
from flask import Flask

from flask_athena.broker.memory import MemoryOutbox
from flask_athena.sse import parse_events
from flask_athena.stream import CHUNK_BYTES, chunks
from flask_athena.testing import AthenaClient, TestPage

from .widgets import Recorder, element

OUTBOX_SIZE = 20


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the hub run (gevent.sleep) until ``predicate`` holds; bounded."""
    with gevent.Timeout(timeout, AssertionError(f"condition not met within {timeout}s")):
        while not predicate():
            gevent.sleep(0.001)


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Recorder()], ATHENA_OUTBOX_SIZE=OUTBOX_SIZE, ATHENA_HEARTBEAT=30)


@pytest.fixture
def page(app: Flask) -> TestPage:
    return AthenaClient(app).open()


class Reader:
    """Serves the page's event stream to a peer that reads every chunk at once."""

    def __init__(self, page: TestPage) -> None:
        self.chunks: list[bytes] = []
        self.greenlet = gevent.spawn(self._serve, page)
        wait_until(lambda: bool(self.chunks))  # the first chunk: retry and replay
        self.chunks.clear()

    def _serve(self, page: TestPage) -> None:
        response = page.client.flask.get(page.config["events"])
        try:
            for chunk in response.response:
                self.chunks.append(chunk)
        finally:
            response.close()

    def events(self) -> list[tuple[str, int | None]]:
        return [
            (e.event, None if e.id is None else int(e.id))
            for e in parse_events(b"".join(self.chunks))
        ]

    def ids(self) -> list[int]:
        return [i for kind, i in self.events() if kind == "message" and i is not None]


@pytest.fixture
def reader(page: TestPage) -> Iterator[Reader]:
    served = Reader(page)
    yield served
    served.greenlet.kill()


def test_a_burst_reaches_the_stream_as_one_write(page: TestPage, reader: Reader) -> None:
    # A broadcast loop that lets every other greenlet run between messages
    # (what bench F3's sustained push does): the stream writes the burst once.
    for n in range(8):
        element(page).call_remote("hear", n)
        gevent.sleep(0)
    wait_until(lambda: len(reader.ids()) == 8)
    assert reader.ids() == list(range(1, 9))
    assert len(reader.chunks) == 1


def test_bursts_apart_are_written_apart(page: TestPage, reader: Reader) -> None:
    element(page).call_remote("hear", 1)
    wait_until(lambda: reader.ids() == [1])
    element(page).call_remote("hear", 2)
    wait_until(lambda: reader.ids() == [1, 2])
    assert len(reader.chunks) == 2


def test_a_burst_past_half_the_outbox_is_written_before_it_is_trimmed(
    page: TestPage, reader: Reader
) -> None:
    # Three outboxes' worth, nothing acknowledged: left to the next loop
    # iteration, the stream would find its next message trimmed (gone).
    count = 3 * OUTBOX_SIZE
    for n in range(count):
        element(page).call_remote("hear", n)
        gevent.sleep(0)
    wait_until(lambda: len(reader.ids()) == count)
    assert reader.ids() == list(range(1, count + 1))  # each once, in order
    assert ("gone", None) not in reader.events()
    assert 1 < len(reader.chunks) < count


def test_every_waiter_wakes_and_a_wait_times_out() -> None:
    outbox = MemoryOutbox(10)
    waiters = [gevent.spawn(outbox.wait, 0, 30.0) for _ in range(2)]
    gevent.sleep(0)  # both wait now
    outbox.publish('"m"')
    assert [w.get(timeout=10) for w in waiters] == [True, True]
    assert outbox.wait(1, 0.01) is False
    assert outbox.wait(0, 0.01) is True  # a message after 0 exists: no wait


def test_close_wakes_the_waiter() -> None:
    outbox = MemoryOutbox(10)
    waiter = gevent.spawn(outbox.wait, 0, 30.0)
    gevent.sleep(0)
    outbox.close()
    assert waiter.get(timeout=10) is True
    assert outbox.read(0) is None


def test_a_big_replay_is_written_in_chunks_of_whole_frames() -> None:
    # One write per CHUNK_BYTES: the slow-consumer time bound applies to each
    # (a browser reading a 25 MB replay steadily is never "write blocked").
    frames = [b"id: %d\ndata: %s\n\n" % (n, b"x" * 100_000) for n in range(1, 8)]
    written = list(chunks(frames, b"retry: 1000\n\n"))
    assert b"".join(written) == b"retry: 1000\n\n" + b"".join(frames)
    assert 1 < len(written) < len(frames)
    assert all(len(w) <= CHUNK_BYTES for w in written)
    ids = [int(e.id) for e in parse_events(b"".join(written)) if e.id is not None]
    assert ids == list(range(1, 8))
    assert all(w.endswith(b"\n\n") for w in written)  # no frame split across writes
    small = [b"id: %d\ndata: 1\n\n" % n for n in range(100)]
    assert list(chunks(small)) == [b"".join(small)]
