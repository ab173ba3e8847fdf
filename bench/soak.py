"""The soak: ``python -m bench --soak [MINUTES]`` (10 by default).

One flask_athena worker holds 10,000 pages for MINUTES while pages come and
go, the pages call the server and the server pushes to all of them, at a
steady rate; every few seconds the worker's RSS and greenlet count are
sampled. Then every page leaves (its stream ends and its beacon closes it)
and both must come back to at most 10% above where they started (a leak
is growth; ending lower is fine), with no error:
no failed open, call or close, no stream dropped, every push received
once and in order by every page (the client checks), and one last push
reaching every page held.

"Where they started" is measured after a warm-up that opens and closes
10,000 pages once: the first 10,000 pages grow the heap (Python's and the
C allocator's arenas, gevent's greenlet stacks) to the size the steady state
reuses, and a leak is growth after that. The series goes to
``<out>/soak.json`` and ``<out>/soak.png``; the exit status is 1 when the
soak failed.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from .figures import F1_SOURCES, Context, LoadMonitor, _settled_rss
from .procs import ClientProc, Server
from .targets import Target

#: Pages held during the soak.
PAGES = 10_000
#: Pages that leave (and as many that come) per second.
CHURN_PER_S = 20
#: Browser → server calls per second (one per page, on random pages).
CALLS_PER_S = 100
#: One push to every page held, every this many seconds.
PUSH_EVERY = 10.0
#: The worker is sampled every this many seconds.
SAMPLE_EVERY = 10.0
#: RSS and greenlets must end within this fraction of their start.
TOLERANCE = 0.10
#: Client processes (the pages are split among them).
PROCS = 2


def _gauge(server: Server) -> dict[str, Any]:
    sample = server.get("/bench/gauge", timeout=60)
    sample["rss_kib"] = server.rss_kib()
    return sample


def _wait_empty(server: Server, limit: float = 180.0) -> dict[str, Any]:
    """Wait (at most ``limit`` s) until the worker holds no page; the last gauge."""
    deadline = time.monotonic() + limit
    sample = _gauge(server)
    while sample["held"] and time.monotonic() < deadline:
        time.sleep(1.0)
        sample = _gauge(server)
    return sample


def _settled(server: Server, greenlets: int | None = None, limit: float = 60.0) -> dict[str, Any]:
    """RSS once settled, and the greenlet count once two readings agree and,
    given ``greenlets``, it is at most that (within ``limit`` seconds: the
    handlers of connections just closed are still ending)."""
    rss = _settled_rss(server, limit=20.0)
    deadline = time.monotonic() + limit
    sample = _gauge(server)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = _gauge(server)
        if again["greenlets"] == sample["greenlets"] and (
            greenlets is None or again["greenlets"] <= greenlets
        ):
            sample = again
            break
        sample = again
    sample["rss_kib"] = rss
    return sample


def _open(procs: list[ClientProc], n: int) -> dict[str, int]:
    errors: dict[str, int] = {}
    for i, proc in enumerate(procs):
        share = n // len(procs) + (1 if i < n % len(procs) else 0)
        proc.send("open", n=share, concurrency=100, timeout=max(240, share / 50))
    for proc in procs:
        reply = proc.receive()
        for name, count in reply["errors"].items():
            errors[f"open:{name}"] = errors.get(f"open:{name}", 0) + count
    return errors


def _leave_all(procs: list[ClientProc]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for proc in procs:
        proc.send("leave_all")
    for proc in procs:
        for name, count in proc.receive()["errors"].items():
            errors[f"close:{name}"] = errors.get(f"close:{name}", 0) + count
    return errors


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for name, count in more.items():
        total[name] = total.get(name, 0) + count


def soak(target: Target, ctx: Context, minutes: float, pages: int = PAGES) -> dict[str, Any]:
    """Run the soak on ``target``; return what goes into ``soak.json``."""
    samples: list[dict[str, Any]] = []
    errors: dict[str, int] = {}
    # Churn and calls scale with the pages (per client process, per second).
    churn = max(1, CHURN_PER_S * pages // PAGES // PROCS)
    calls = max(1, CALLS_PER_S * pages // PAGES // PROCS)
    result: dict[str, Any] = {
        "target": target.name,
        "minutes": minutes,
        "pages": pages,
        "churn_per_s": churn * PROCS,
        "calls_per_s": calls * PROCS,
        "push_every_s": PUSH_EVERY,
        "tolerance": TOLERANCE,
        "samples": samples,
        "errors": errors,
    }
    with ctx.server(target, "soak") as server:
        procs: list[ClientProc] = []
        monitor = LoadMonitor(lambda: [os.getpid(), *server.pids(), *(c.pid for c in procs)])
        t0 = time.monotonic()

        def sample(phase: str) -> dict[str, Any]:
            entry = {"t": time.monotonic() - t0, "phase": phase, **_gauge(server)}
            samples.append(entry)
            return entry

        def clients() -> list[ClientProc]:
            return [ctx.client(target, server.port, 16, sources=F1_SOURCES) for _ in range(PROCS)]

        def settle(phase: str, greenlets: int | None = None) -> dict[str, Any]:
            # Every page left and the clients are gone (their keep-alive
            # connections too): what the worker holds now is its own.
            for proc in procs:
                proc.stop()
            procs.clear()
            _wait_empty(server)
            entry = _settled(server, greenlets)
            entry["t"], entry["phase"] = time.monotonic() - t0, phase
            samples.append(entry)
            return entry

        try:
            procs.extend(clients())
            print(f"  soak: warm-up, {pages:,} pages opened and closed", flush=True)
            _add(errors, _open(procs, pages))
            sample("warm-up")
            _add(errors, _leave_all(procs))
            start = result["start"] = settle("start")
            print(
                f"  soak: start {start['rss_kib'] / 1024:.1f} MiB, "
                f"{start['greenlets']} greenlets; {pages:,} pages for {minutes:g} min",
                flush=True,
            )
            procs.extend(clients())
            _add(errors, _open(procs, pages))
            sample("opened")
            k = 0
            tick = 1.0
            ends = time.monotonic() + minutes * 60
            next_push = next_sample = time.monotonic()
            while time.monotonic() < ends:
                began = time.monotonic()
                if began >= next_push:
                    k += 1
                    server.post("/bench/push", {"k": k}, timeout=60)
                    next_push += PUSH_EVERY
                for proc in procs:
                    proc.send("churn", drop=churn, add=churn, calls=calls)
                for proc in procs:
                    _add(errors, proc.receive()["errors"])
                if time.monotonic() >= next_sample:
                    sample("soak")
                    next_sample += SAMPLE_EVERY
                time.sleep(max(0.0, tick - (time.monotonic() - began)))
            result["pushes"] = k
            # Every page held must still be live and in order: one last push.
            for proc in procs:
                proc.call("arm", lo=k + 1, hi=k + 2)
            server.post("/bench/push", {"k": k + 1}, timeout=60)
            waits = [proc.call("wait", timeout=120) for proc in procs]
            last = result["last_push"] = {
                "pages": sum(w["expected"] for w in waits),
                "reached": sum(w["count"] for w in waits),
            }
            if last["reached"] != last["pages"]:
                errors["last-push-missed"] = last["pages"] - last["reached"]
            for proc in procs:
                status = proc.call("status")
                _add(errors, status["errors"])
                if status["closed_streams"]:
                    _add(errors, {"stream-dropped": status["closed_streams"]})
            sample("before close")
            print("  soak: every page leaves", flush=True)
            _add(errors, _leave_all(procs))
            result["end"] = settle("end", math.floor(start["greenlets"] * (1 + TOLERANCE)))
            result["foreign_load_cores"] = monitor.foreign_cores()
        finally:
            for proc in procs:
                proc.stop()
    start, end = result["start"], result["end"]
    result["rss_ratio"] = end["rss_kib"] / start["rss_kib"]
    result["greenlets_ratio"] = end["greenlets"] / max(1, start["greenlets"])
    # A leak is growth: ending below the start is fine.
    result["passed"] = (
        not errors
        and end["held"] == 0
        and result["rss_ratio"] <= 1 + TOLERANCE
        and result["greenlets_ratio"] <= 1 + TOLERANCE
    )
    return result


def plot(result: dict[str, Any], out: Path) -> Path:
    """``soak.png``: RSS and greenlets over time, with pages held."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result["samples"]
    ts = [s["t"] / 60 for s in samples]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    a1.plot(ts, [s["rss_kib"] / 1024 for s in samples], "o-", color="#2b6cd9", ms=3)
    a1.set_ylabel("worker RSS (MiB)")
    a2.plot(ts, [s["greenlets"] for s in samples], "o-", color="#3a9d5d", ms=3)
    a2.set_ylabel("greenlets")
    a2.set_xlabel("minutes")
    for ax, key in ((a1, "rss_kib"), (a2, "greenlets")):
        scale = 1024 if key == "rss_kib" else 1
        base = result["start"][key] / scale
        ax.axhspan(base, base * (1 + TOLERANCE), color="#cccccc", alpha=0.4)
        twin = ax.twinx()
        twin.plot(ts, [s["held"] for s in samples], ":", color="#777777")
        twin.set_ylabel("pages held", color="#777777")
    verdict = "passed" if result["passed"] else "FAILED"
    a1.set_title(
        f"soak, {result['minutes']:g} min, {result['pages']:,} pages: {verdict} "
        f"(RSS end/start {result['rss_ratio']:.2f}, greenlets {result['greenlets_ratio']:.2f}; "
        f"band: start to +{TOLERANCE:.0%})",
        fontsize=9,
    )
    fig.tight_layout()
    path = out / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(
    target: Target, ctx: Context, minutes: float, pages: int = PAGES, plots: bool = True
) -> int:
    print(f"flask_athena soak, {minutes:g} min; results in {ctx.out}", flush=True)
    started = time.monotonic()
    result = soak(target, ctx, minutes, pages)
    result["seconds"] = round(time.monotonic() - started, 1)
    (ctx.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    if plots:
        plot(result, ctx.out)
    start, end = result["start"], result["end"]
    print(
        f"start {start['rss_kib'] / 1024:.1f} MiB, {start['greenlets']} greenlets; "
        f"end {end['rss_kib'] / 1024:.1f} MiB ({result['rss_ratio']:.3f}x), "
        f"{end['greenlets']} greenlets ({result['greenlets_ratio']:.3f}x); "
        f"peak {max(s['rss_kib'] for s in result['samples']) / 1024:.1f} MiB, "
        f"{max(s['greenlets'] for s in result['samples'])} greenlets; "
        f"{result['pushes']} pushes; errors {result['errors'] or 0}"
    )
    print("soak " + ("passed" if result["passed"] else "FAILED"))
    return 0 if result["passed"] else 1
