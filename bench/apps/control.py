"""Control endpoints shared by every benchmark app.

The load client triggers server-side work through these (a broadcast, a
sustained push loop, a burst of server → browser calls), so that every
target is driven by the same code and only the library under test differs.
They are a benchmark harness, not part of any library's API.

Every loop here is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

import gevent
from flask import Blueprint, Flask, jsonify, request

#: The chat line every push carries (Athena's tutorial: ``hear(sayer, text)``).
SAYER = "bob"
TEXT = "hello from the benchmark: one chat line of a typical length, 80 bytes or so."


class Adapter(Protocol):
    """What an app tells the control endpoints about its library."""

    def connected(self) -> list[Any]:
        """Handles of the clients whose stream is open now."""

    def broadcast(self, k: int) -> int:
        """Push ``hear(k, SAYER, TEXT)`` to every connected client."""

    def push_to(self, client_id: str, start: int, count: int) -> int:
        """Push ``count`` messages to one client (connected or not); ``-1`` if unsupported."""

    def call(self, handle: Any, k: int, timeout: float) -> Any:
        """Call ``ping(k)`` in the client and block until it answers."""

    def context(self) -> AbstractContextManager[Any]:
        """Entered once by every background greenlet the control code starts."""


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def install(app: Flask, adapter: Adapter) -> None:
    """Add ``/healthz`` and ``/bench/*`` to ``app``."""
    bp = Blueprint("bench_control", __name__)
    loops: list[gevent.Greenlet] = []

    @bp.get("/healthz")
    def healthz() -> Any:
        return "ok"

    @bp.get("/bench/stats")
    def stats() -> Any:
        return jsonify(connected=len(adapter.connected()))

    @bp.post("/bench/push")
    def push() -> Any:
        k = int(request.get_json()["k"])
        started = time.perf_counter()
        reached = adapter.broadcast(k)
        # How long the broadcast call itself took (queueing, before any write).
        return jsonify(reached=reached, broadcast_ms=(time.perf_counter() - started) * 1000)

    @bp.post("/bench/sustain")
    def sustain() -> Any:
        body = request.get_json()
        start, count = int(body["start"]), int(body["count"])
        deadline = time.monotonic() + float(body.get("timeout", 60))

        def loop() -> None:
            with adapter.context():
                for k in range(start, start + count):
                    adapter.broadcast(k)
                    # Let every stream write what it has before the next
                    # broadcast: the push rate is what the server sustains.
                    gevent.sleep(0)
                    if time.monotonic() > deadline:
                        return

        loops[:] = [g for g in loops if not g.dead]
        loops.append(gevent.spawn(loop))
        return jsonify(started=True)

    @bp.post("/bench/push_to")
    def push_to() -> Any:
        body = request.get_json()
        pushed = adapter.push_to(str(body["id"]), int(body["start"]), int(body["count"]))
        if pushed < 0:
            return jsonify(error="unsupported"), 501
        return jsonify(pushed=pushed)

    @bp.post("/bench/s2c")
    def server_to_client() -> Any:
        body = request.get_json()
        clients, per_client = int(body["clients"]), int(body["per_client"])
        count, timeout = int(body["count"]), float(body.get("timeout", 30))
        handles = adapter.connected()[:clients]
        latencies: list[float] = []
        errors: dict[str, int] = {}
        deadline = time.monotonic() + timeout
        budget = [count]

        def driver(handle: Any, lane: int) -> None:
            with adapter.context():
                while budget[0] > 0 and time.monotonic() < deadline:
                    budget[0] -= 1
                    k = budget[0]
                    t0 = time.monotonic()
                    try:
                        value = adapter.call(handle, k, 10.0)
                    except Exception as exc:  # counted, reported, never hidden
                        name = type(exc).__name__
                        errors[name] = errors.get(name, 0) + 1
                        continue
                    latencies.append(time.monotonic() - t0)
                    if value != k:
                        errors["wrong-answer"] = errors.get("wrong-answer", 0) + 1

        started = time.monotonic()
        greenlets = [
            gevent.spawn(driver, handle, lane) for handle in handles for lane in range(per_client)
        ]
        gevent.joinall(greenlets, timeout=timeout + 15)
        for g in greenlets:
            g.kill(block=False)
        elapsed = time.monotonic() - started
        latencies.sort()
        return jsonify(
            clients=len(handles),
            in_flight=len(greenlets),
            count=len(latencies),
            errors=errors,
            elapsed=elapsed,
            p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
        )

    app.register_blueprint(bp)


def no_context() -> AbstractContextManager[Any]:
    return contextlib.nullcontext()
