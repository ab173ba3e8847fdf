"""Figures F1–F7: what each measures and how, for one target at a time.

Each figure function returns a plain dict that goes into the JSON as is.
Throughput figures are repeated (``reps``) and the best repetition is the
headline, because other load on a shared machine only ever slows a run
down; every repetition is kept in the JSON. Latency figures report the
median and p99 of all their samples.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .procs import ROOT, ClientProc, Server, nofile_limit
from .targets import Target

#: Connections opened before the F1 baseline (so first-request costs are paid).
F1_WARM = 10
#: fds a process keeps besides the measured connections (listeners, pools, pipes).
FD_HEADROOM = 300
#: Loopback source addresses the F1 clients spread their streams over: one
#: address reaches the server's port from ~28k ephemeral ports only
#: (``net.ipv4.ip_local_port_range``); Linux routes all of 127/8 to ``lo``.
F1_SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]


@dataclass(frozen=True)
class Params:
    mode: str
    levels: list[int]  #: F1 idle pages, cumulative
    pages: int  #: connected pages for F2–F5
    fanout_rounds: int
    sustain_count: int  #: F3 messages pushed to every page
    calls_c1: int
    calls_count: int  #: F4 budget at c=100
    calls_seconds: float
    s2c_count: int
    replay_rounds: int
    reps: int  #: repetitions of throughput figures
    f1_procs: int = 2
    #: F1 levels after which one push must reach every page held (and is timed)
    push_levels: tuple[int, ...] = ()
    concurrency: int = 100
    s2c_clients: int = 10
    s2c_per_client: int = 10
    replay_messages: int = 1000
    quiet_wait: float = 0.0  #: seconds to wait for a quiet machine before a target


FULL = Params(
    "full",
    [1000, 5000, 10000, 19000, 50000, 100000],
    pages=1000,
    fanout_rounds=100,
    sustain_count=300,
    calls_c1=2000,
    calls_count=60000,
    calls_seconds=5.0,
    s2c_count=20000,
    replay_rounds=20,
    reps=3,
    quiet_wait=45.0,
    push_levels=(19000, 50000, 100000),
)
QUICK = Params(
    "quick",
    [200, 1000],
    pages=200,
    fanout_rounds=20,
    sustain_count=50,
    calls_c1=300,
    calls_count=4000,
    calls_seconds=1.5,
    s2c_count=2000,
    replay_rounds=5,
    reps=1,
)


@dataclass
class Context:
    """What the figure functions share: parameters, output paths, options."""

    params: Params
    out: Path
    logs: Path
    profile: set[str] = field(default_factory=set)
    only: set[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: PIDs of the services the target runs with (redis-server)
    service_pids: list[int] = field(default_factory=list)
    #: the Athena client's ack policy (messages, seconds); None: athena.js's
    ack: tuple[int, float] | None = None

    def client(
        self, target: Target, port: int, pool: int, sources: list[str] | None = None
    ) -> ClientProc:
        return ClientProc(target.protocol, port, pool=pool, ack=self.ack, sources=sources)

    def wanted(self, figure: str) -> bool:
        return self.only is None or figure in self.only

    def server(self, target: Target, phase: str) -> Server:
        return Server(
            target.app,
            target.worker_class,
            target.workers,
            self.logs,
            f"{target.name}-{phase}",
            env={**self.env, **target.env},
            root=Path(target.root) if target.root else ROOT,
        )


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- the machine ----------------------------------------------------------------


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    return user + nice + system


def _tree_cpu(pids: list[int]) -> float:
    from .procs import cpu_seconds

    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


class LoadMonitor:
    """CPU used on this machine by processes other than the suite's own."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._start = (time.monotonic(), _busy_ticks(), _tree_cpu(pids()))

    def foreign_cores(self) -> float:
        """Average cores' worth of CPU others used since the monitor started."""
        t0, busy0, ours0 = self._start
        wall = time.monotonic() - t0
        busy = (_busy_ticks() - busy0) / os.sysconf("SC_CLK_TCK")
        ours = _tree_cpu(self._pids()) - ours0
        return max(0.0, (busy - ours) / wall) if wall > 0 else 0.0


def wait_quiet(limit: float, threshold: float = 0.15) -> float:
    """Wait (at most ``limit`` s) until other processes use < ``threshold`` of a core."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        monitor = LoadMonitor(lambda: [os.getpid()])
        time.sleep(1.0)
        if monitor.foreign_cores() < threshold:
            break
    return time.monotonic() - started


# -- profiling ------------------------------------------------------------------


def py_spy() -> str | None:
    """The ``py-spy`` of this Python's environment (the ``bench`` extra
    installs it), else the one on ``PATH``; ``None`` when there is none."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def profiled(ctx: Context, target: Target, figure: str, server: Server) -> Iterator[None]:
    """Record the server worker with py-spy while the block runs (``--profile``)."""
    if target.name not in ctx.profile:
        yield
        return
    path = ctx.out / "profiles" / f"{target.name}-{figure}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(
        [
            py_spy() or "py-spy",
            "record",
            "-p",
            str(server.worker_pids[0]),
            "-r",
            "250",
            "--format",
            "raw",
            "-o",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # py-spy attaches
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)
    if path.exists():
        summarize_profile(path)


def summarize_profile(path: Path, top: int = 80) -> None:
    """Write ``<profile>.summary.txt``: the functions with most self and total time."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for name in {f.split(" (")[0] for f in frames}:
            total[name] += n
    lines = [f"{samples} samples", "", "self:"]
    lines += [f"{100 * n / samples:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "total:"]
    lines += [f"{100 * n / samples:5.1f}%  {name}" for name, n in total.most_common(top)]
    path.with_suffix(".summary.txt").write_text("\n".join(lines) + "\n")


# -- F1: idle pages -------------------------------------------------------------


def _settled_rss(server: Server, limit: float = 8.0) -> int:
    """Worker RSS (KiB) once two samples 0.5 s apart agree within 0.5%."""
    deadline = time.monotonic() + limit
    previous = server.rss_kib()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = server.rss_kib()
        if abs(current - previous) <= 0.005 * previous:
            return current
        previous = current
    return previous


def _push_all(server: Server, procs: list[ClientProc], k: int) -> dict[str, Any]:
    """One push (``k``) to every page held: how many got it, when the last did."""
    for proc in procs:
        proc.call("arm", lo=k, hi=k + 1)
    t0 = time.monotonic()
    server.post("/bench/push", {"k": k}, timeout=120)
    waits = [proc.call("wait", timeout=120) for proc in procs]
    last = max((w["last"] for w in waits if w["count"]), default=t0)
    return {
        "pages": sum(w["expected"] for w in waits),
        "reached": sum(w["count"] for w in waits),
        "last_ms": (last - t0) * 1000,
    }


def idle_pages(target: Target, ctx: Context) -> dict[str, Any]:
    """F1: ramp idle pages (stream open, nothing sent) and read the worker's RSS."""
    p = ctx.params
    levels: list[dict[str, Any]] = []
    result: dict[str, Any] = {"levels": levels}
    with ctx.server(target, "f1") as server:
        procs: list[ClientProc] = []
        monitor = LoadMonitor(
            lambda: [os.getpid(), *server.pids(), *ctx.service_pids, *(c.pid for c in procs)]
        )
        try:
            procs = [
                ctx.client(target, server.port, 8, sources=F1_SOURCES) for _ in range(p.f1_procs)
            ]
            warm = procs[0].call("open", n=F1_WARM)
            if warm["failed"]:
                raise RuntimeError(f"warm-up failed: {warm['errors']}")
            base = _settled_rss(server)
            result["base_rss_mib"] = base / 1024
            result["fd_limit"] = {"server": server.fd_limit()}
            held = F1_WARM
            client_fds = min(nofile_limit(c.pid) for c in procs)
            result["fd_limit"]["client"] = client_fds
            pushed_at = -1  # pages held when the last push reached them all
            counts = [F1_WARM] + [0] * (len(procs) - 1)  # pages each client process holds
            for level in p.levels:
                server_fds = server.fd_limit()
                share = math.ceil(level / len(procs))
                if target.f1_max is not None and level > target.f1_max:
                    levels.append({"level": level, "skipped": f"over {target.f1_max:,} (target)"})
                    break
                if level + FD_HEADROOM > server_fds:
                    levels.append({"level": level, "skipped": f"server fd limit {server_fds}"})
                    break
                while share + FD_HEADROOM > client_fds and client_fds > 2 * FD_HEADROOM:
                    # One more client process (each has its own fd limit).
                    procs.append(ctx.client(target, server.port, 8, sources=F1_SOURCES))
                    counts.append(0)
                    share = math.ceil(level / len(procs))
                # Fill the processes up to an even share each.
                add = level - held
                shares = [max(0, share - n) for n in counts]
                while sum(shares) > add:
                    shares[shares.index(max(shares))] -= 1
                t0 = time.monotonic()
                for proc, n in zip(procs, shares):
                    proc.send("open", n=n, concurrency=100, timeout=max(240, n / 50))
                replies = [proc.receive() for proc in procs]
                opened_s = time.monotonic() - t0
                held += sum(r["opened"] for r in replies)
                counts = [r["total"] for r in replies]
                errors: Counter[str] = Counter()
                for r in replies:
                    errors.update(r["errors"])
                rss = _settled_rss(server)
                dropped = sum(proc.call("status")["closed_streams"] for proc in procs)
                failures = sum(r["failed"] for r in replies) + dropped
                entry: dict[str, Any] = {
                    "level": level,
                    "held": held,
                    "failures": failures,
                    "errors": dict(errors),
                    "dropped": dropped,
                    "open_seconds": opened_s,
                    "rss_mib": rss / 1024,
                    "rss_per_page_kib": (rss - base) / max(1, held - F1_WARM),
                }
                levels.append(entry)
                if failures:
                    break
                if level in p.push_levels:
                    entry["push"] = _push_all(server, procs, level)
                    pushed_at = held
                    if entry["push"]["reached"] != entry["push"]["pages"]:
                        break
            # Every page held must still be live: one push must reach them all.
            last_push = levels[-1].get("push") if levels else None
            if last_push is not None and pushed_at == held:
                result["push_to_all"] = last_push
            else:
                result["push_to_all"] = _push_all(server, procs, 1)
            # Read while the clients live: a dead process's CPU is no longer ours.
            result["foreign_load_cores"] = monitor.foreign_cores()
        finally:
            for proc in procs:
                proc.stop()
    clean = [
        lv
        for lv in levels
        if "held" in lv
        and not lv["failures"]
        and lv.get("push", {}).get("reached") == lv.get("push", {}).get("pages")
    ]
    result["max_held"] = clean[-1]["held"] if clean else 0
    push = result.get("push_to_all", {})
    result["zero_failures"] = (
        bool(levels)
        and all(not lv.get("failures") for lv in levels)
        and push.get("reached") == push.get("pages")
    )
    if clean:
        result["rss_per_page_kib"] = clean[-1]["rss_per_page_kib"]
        result["rss_level"] = clean[-1]["level"]
    return result


# -- F2–F6: one server, ``pages`` connected pages --------------------------------


def fanout(server: Server, client: ClientProc, ctx: Context) -> dict[str, Any]:
    """F2: one push to every connected page; time until the last page has it."""
    r = client.call("fanout", start=1000, rounds=ctx.params.fanout_rounds)
    return {
        "pages": r["pages"],
        "rounds": r["rounds"],
        "missing": r["missing"],
        "median_ms": median(r["last_ms"]),
        "p99_ms": pct(r["last_ms"], 0.99),
        "median_page_ms": median(r["median_page_ms"]),
        "broadcast_call_ms": median(r["broadcast_ms"]),
        "client_busy": r["client_cpu"] / r["client_wall"],
    }


def _best(reps: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return max(reps, key=lambda r: r[key] or 0.0)


def sustained(server: Server, client: ClientProc, ctx: Context) -> dict[str, Any]:
    """F3: ``sustain_count`` pushes to every page back to back: rate and server CPU."""
    p = ctx.params
    reps = []
    for i in range(p.reps):
        cpu0 = server.cpu_seconds()
        r = client.call("sustain", start=100_000 * (i + 1), count=p.sustain_count, timeout=120)
        cpu = server.cpu_seconds() - cpu0
        delivered = r["delivered"]
        reps.append(
            {
                "pages": r["pages"],
                "expected": r["expected"],
                "delivered": delivered,
                "elapsed": r["elapsed"],
                "deliveries_per_s": delivered / r["elapsed"] if r["elapsed"] else 0.0,
                "server_cpu_s": cpu,
                "cpu_us_per_delivery": cpu / delivered * 1e6 if delivered else None,
                "client_busy": r["client_cpu"] / r["client_wall"],
            }
        )
        time.sleep(0.5)
    best = _best(reps, "deliveries_per_s")
    return {
        "pages": best["pages"],
        "messages_per_page": p.sustain_count,
        "complete": all(r["delivered"] == r["expected"] for r in reps),
        "deliveries_per_s": best["deliveries_per_s"],
        "cpu_us_per_delivery": median(
            [r["cpu_us_per_delivery"] for r in reps if r["cpu_us_per_delivery"]]
        ),
        "client_busy": best["client_busy"],
        "reps": reps,
    }


def browser_calls(server: Server, client: ClientProc, ctx: Context) -> dict[str, Any]:
    """F4: browser → server calls: latency at concurrency 1, calls/s at 100."""
    p = ctx.params
    c1 = client.call("calls", concurrency=1, count=p.calls_c1, duration=60)
    reps = []
    for _ in range(p.reps):
        cpu0 = server.cpu_seconds()
        r = client.call(
            "calls", concurrency=p.concurrency, count=p.calls_count, duration=p.calls_seconds
        )
        cpu = server.cpu_seconds() - cpu0
        reps.append(
            {
                "calls": r["count"],
                "errors": r["errors"],
                "elapsed": r["elapsed"],
                "calls_per_s": r["count"] / r["elapsed"] if r["elapsed"] else 0.0,
                "cpu_us_per_call": cpu / r["count"] * 1e6 if r["count"] else None,
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "client_busy": r["client_cpu"] / r["client_wall"],
            }
        )
        time.sleep(0.5)
    best = _best(reps, "calls_per_s")
    return {
        "c1_calls": c1["count"],
        "c1_errors": c1["errors"],
        "c1_p50_ms": c1["p50_ms"],
        "c1_p99_ms": c1["p99_ms"],
        "concurrency": p.concurrency,
        "calls_per_s": best["calls_per_s"],
        "cpu_us_per_call": best["cpu_us_per_call"],
        "p50_ms": best["p50_ms"],
        "p99_ms": best["p99_ms"],
        "errors": sum(sum(r["errors"].values()) for r in reps) + sum(c1["errors"].values()),
        "client_busy": best["client_busy"],
        "reps": reps,
    }


def server_calls(server: Server, client: ClientProc, ctx: Context) -> dict[str, Any]:
    """F5: server → browser calls answered by the client, 100 in flight."""
    p = ctx.params
    reps = []
    for _ in range(p.reps):
        cpu0 = server.cpu_seconds()
        r = client.call(
            "s2c", clients=p.s2c_clients, per_client=p.s2c_per_client, count=p.s2c_count, timeout=60
        )
        cpu = server.cpu_seconds() - cpu0
        reps.append(
            {
                "round_trips": r["count"],
                "errors": r["errors"],
                "in_flight": r["in_flight"],
                "elapsed": r["elapsed"],
                "round_trips_per_s": r["count"] / r["elapsed"] if r["elapsed"] else 0.0,
                "cpu_us_per_round_trip": cpu / r["count"] * 1e6 if r["count"] else None,
                "p50_ms": r["p50_ms"],
                "p99_ms": r["p99_ms"],
                "client_busy": r["client_cpu"] / r["client_wall"],
            }
        )
        if "per_worker" in r:  # Redis targets: [clients, round trips] on each worker
            reps[-1]["per_worker"] = r["per_worker"]
        time.sleep(0.5)
    best = _best(reps, "round_trips_per_s")
    return {
        "in_flight": best["in_flight"],
        "round_trips_per_s": best["round_trips_per_s"],
        "cpu_us_per_round_trip": best["cpu_us_per_round_trip"],
        "p50_ms": best["p50_ms"],
        "p99_ms": best["p99_ms"],
        "errors": sum(sum(r["errors"].values()) for r in reps),
        "client_busy": best["client_busy"],
        "reps": reps,
    }


def replay(server: Server, client: ClientProc, ctx: Context) -> dict[str, Any]:
    """F6: 1,000 messages queue while a page's stream is down; time their replay."""
    p = ctx.params
    r = client.call("replay", start=10_000_000, count=p.replay_messages, rounds=p.replay_rounds)
    return {
        "messages": r["messages"],
        "rounds": r["rounds"],
        "missing": r["missing"],
        "median_ms": median(r["times_ms"]),
        "p99_ms": pct(r["times_ms"], 0.99),
        "max_ms": max(r["times_ms"]) if r["times_ms"] else None,
    }


SESSION_FIGURES: dict[str, Callable[[Server, ClientProc, Context], dict[str, Any]]] = {
    "F2": fanout,
    "F3": sustained,
    "F4": browser_calls,
    "F5": server_calls,
    "F6": replay,
}


def connected_figures(target: Target, ctx: Context) -> dict[str, Any]:
    """F2–F6 on one server with ``pages`` pages connected by one client process."""
    out: dict[str, Any] = {}
    wanted = [f for f in SESSION_FIGURES if ctx.wanted(f)]
    for figure in wanted:
        if figure in target.unsupported:
            out[figure] = {"supported": False, "reason": target.unsupported[figure]}
    todo = [f for f in wanted if f not in out]
    if not todo:
        return out
    with ctx.server(target, "f2-f6") as server:
        client: ClientProc | None = None
        monitor = LoadMonitor(
            lambda: (
                [os.getpid(), *server.pids(), *ctx.service_pids] + ([client.pid] if client else [])
            )
        )
        try:
            client = ctx.client(target, server.port, 128)
            opened = client.call("open", n=ctx.params.pages)
            if opened["failed"]:
                raise RuntimeError(
                    f"could not connect {ctx.params.pages} pages: {opened['errors']}"
                )
            if target.scale_out:
                # How the kernel spread the pages over the workers (their owners).
                out["_spread"] = server.get("/bench/stats")
            for figure in todo:
                try:
                    with profiled(ctx, target, figure, server):
                        out[figure] = SESSION_FIGURES[figure](server, client, ctx)
                except Exception as exc:  # one broken figure must not hide the others
                    out[figure] = {"error": f"{type(exc).__name__}: {exc}"}
                time.sleep(0.5)
            status = client.call("status")
            out["_client"] = {
                "unexpected_stream_closes": status["closed_streams"],
                "errors": status["errors"],
                "requests": status["requests"],
                # keep-alive connections: opened, requests sent again after the
                # server closed one, idle ones dropped before reuse
                "connects": status["connects"],
                "retries": status["retries"],
                "stale_dropped": status["stale_dropped"],
            }
            out["_foreign_load_cores"] = monitor.foreign_cores()
        finally:
            if client is not None:
                client.stop()
    return out
