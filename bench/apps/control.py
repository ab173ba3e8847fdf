"""Control endpoints shared by every benchmark app.

The load client triggers server-side work through these (a broadcast, a
sustained push loop, a burst of server → browser calls), so that every
target is driven by the same code and only the library under test differs.
They are a benchmark harness, not part of any library's API.

Every loop here is bounded in count and time.
"""

from __future__ import annotations

import contextlib
import gc
import os
import time
from contextlib import AbstractContextManager
from typing import Any, Protocol

import gevent
from flask import Blueprint, Flask, jsonify, request
from greenlet import greenlet

from .cluster import Cluster, apportion

#: The chat line every push carries (Athena's tutorial: ``hear(sayer, text)``).
SAYER = "bob"
TEXT = "hello from the benchmark: one chat line of a typical length, 80 bytes or so."


class Adapter(Protocol):
    """What an app tells the control endpoints about its library."""

    def connected(self) -> list[Any]:
        """Handles of the clients whose stream is open now (on this worker)."""

    def broadcast(self, k: int) -> int:
        """Push ``hear(k, SAYER, TEXT)`` to every connected client."""

    def push_to(self, client_id: str, start: int, count: int) -> int | None:
        """Push ``count`` messages to one client (connected or not).

        ``-1`` if unsupported, ``None`` if the client is not on this worker.
        """

    def call(self, handle: Any, k: int, timeout: float) -> Any:
        """Call ``ping(k)`` in the client and block until it answers."""

    def context(self) -> AbstractContextManager[Any]:
        """Entered once by every background greenlet the control code starts."""

    def held(self) -> int:
        """Pages (clients) this worker holds, with or without an open stream."""


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def server_calls(
    adapter: Adapter, clients: int, per_client: int, count: int, timeout: float
) -> dict[str, Any]:
    """``count`` server → client ``ping`` calls on this worker's first ``clients``
    connected clients, ``per_client`` in flight on each; latencies in seconds."""
    handles = adapter.connected()[: max(0, clients)]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    budget = [count]

    def driver(handle: Any) -> None:
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
    greenlets = [gevent.spawn(driver, handle) for handle in handles for _ in range(per_client)]
    gevent.joinall(greenlets, timeout=timeout + 15)
    for g in greenlets:
        g.kill(block=False)
    ended = time.monotonic()
    latencies.sort()
    return {
        "clients": len(handles),
        "in_flight": len(greenlets),
        "errors": errors,
        # CLOCK_MONOTONIC is one clock for every process of the machine, so
        # the spans of several workers can be merged.
        "started": started,
        "ended": ended,
        "latencies": latencies,
    }


def summarize_calls(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One F5 answer from the :func:`server_calls` of one or more workers."""
    ran = [p for p in parts if p["in_flight"]] or parts
    latencies = sorted(x for p in parts for x in p["latencies"])
    errors: dict[str, int] = {}
    for p in parts:
        for name, n in p["errors"].items():
            errors[name] = errors.get(name, 0) + n
    return {
        "clients": sum(p["clients"] for p in parts),
        "in_flight": sum(p["in_flight"] for p in parts),
        "count": len(latencies),
        "errors": errors,
        "elapsed": max(p["ended"] for p in ran) - min(p["started"] for p in ran),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
    }


def install(app: Flask, adapter: Adapter, cluster_url: str | None = None) -> None:
    """Add ``/healthz`` and ``/bench/*`` to ``app``.

    With ``cluster_url`` (a Redis URL: the flask_athena+Redis targets, one or
    more gunicorn workers), the endpoints that act on particular pages run on
    every worker through :class:`~bench.apps.cluster.Cluster`, each on the
    pages it owns, and merge the answers; otherwise on this worker only.
    """
    bp = Blueprint("bench_control", __name__)
    loops: list[gevent.Greenlet] = []
    cluster = _cluster(app, adapter, cluster_url) if cluster_url else None

    @bp.get("/healthz")
    def healthz() -> Any:
        return "ok"

    @bp.get("/bench/stats")
    def stats() -> Any:
        if cluster is None:
            return jsonify(connected=len(adapter.connected()), workers=1)
        replies = cluster.gather("stats", {}, 10.0)
        return jsonify(
            connected=sum(r["connected"] for r in replies),
            workers=len(replies),
            per_worker=sorted(r["connected"] for r in replies),
        )

    @bp.get("/bench/gauge")
    def gauge() -> Any:
        # The soak's samples (python -m bench --soak): what this worker holds.
        # Counting greenlets walks the heap: once every few seconds only.
        greenlets = sum(1 for obj in gc.get_objects() if isinstance(obj, greenlet))
        return jsonify(
            pid=os.getpid(),
            greenlets=greenlets,
            held=adapter.held(),
            connected=len(adapter.connected()),
        )

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
        client_id, start, count = str(body["id"]), int(body["start"]), int(body["count"])
        if cluster is None:
            pushed = adapter.push_to(client_id, start, count)
        else:
            args = {"id": client_id, "start": start, "count": count}
            answers = [r["pushed"] for r in cluster.gather("push_to", args, 60.0)]
            pushed = next((n for n in answers if n is not None), None)
        if pushed is None:
            return jsonify(error="unknown client"), 404
        if pushed < 0:
            return jsonify(error="unsupported"), 501
        return jsonify(pushed=pushed)

    @bp.post("/bench/s2c")
    def server_to_client() -> Any:
        body = request.get_json()
        clients, per_client = int(body["clients"]), int(body["per_client"])
        count, timeout = int(body["count"]), float(body.get("timeout", 30))
        if cluster is None:
            parts = [server_calls(adapter, clients, per_client, count, timeout)]
            return jsonify(summarize_calls(parts))
        # Spread the clients over the workers in proportion to the pages each
        # holds, and the calls in proportion to the clients.
        held = {str(r["pid"]): r["connected"] for r in cluster.gather("stats", {}, 10.0)}
        pids = sorted(held)
        weights = [held[p] for p in pids]
        picked = apportion(min(clients, sum(weights)), weights)
        calls = apportion(count, picked)
        shares = {p: [picked[i], calls[i]] for i, p in enumerate(pids)}
        args = {"shares": shares, "per_client": per_client, "timeout": timeout}
        parts = cluster.gather("s2c", args, timeout + 30)
        result = summarize_calls(parts)
        result["per_worker"] = sorted(
            ([p["clients"], len(p["latencies"])] for p in parts), reverse=True
        )
        return jsonify(result)

    app.register_blueprint(bp)


def _cluster(app: Flask, adapter: Adapter, url: str) -> Cluster:
    """The per-worker handlers of the multi-worker driver, and its listener."""

    def stats(args: dict[str, Any]) -> dict[str, Any]:
        return {"connected": len(adapter.connected())}

    def push_to(args: dict[str, Any]) -> dict[str, Any]:
        return {"pushed": adapter.push_to(str(args["id"]), int(args["start"]), int(args["count"]))}

    def s2c(args: dict[str, Any]) -> dict[str, Any]:
        clients, count = args["shares"].get(str(os.getpid()), [0, 0])
        part = server_calls(
            adapter, int(clients), int(args["per_client"]), int(count), float(args["timeout"])
        )
        if not part["clients"]:
            part["started"] = part["ended"] = 0.0
        part["latencies"] = [round(x, 7) for x in part["latencies"]]
        return part

    cluster = Cluster(url, {"stats": stats, "push_to": push_to, "s2c": s2c}, adapter.context)
    # Every worker that serves a request (so every worker that holds a page)
    # listens for commands.
    app.before_request(cluster.start)
    return cluster


def no_context() -> AbstractContextManager[Any]:
    return contextlib.nullcontext()
