"""The one command: ``python -m bench [--quick] [--out DIR]``.

Starts every available target on 127.0.0.1 (servers on core 0, load
clients on core 1), measures figures F1–F7 for each in the same run, prints
the table and the goals, writes ``results.json`` and PNG plots to ``--out``
(default ``bench/results``). Exits 1 when a figure of an available target
failed to run (the CI smoke test relies on that); missed goals are reported,
never a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from . import figures, report, soak
from .client import ACK_POLICY
from .procs import ROOT, free_port, raise_nofile
from .targets import BY_NAME, TARGETS, Target, baseline

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nofile_hard": raise_nofile(),
        "versions": {
            d: version(d)
            for d in (
                "gevent",
                "greenlet",
                "gunicorn",
                "flask",
                "werkzeug",
                "flask-socketio",
                "python-socketio",
                "python-engineio",
                "gevent-websocket",
                "uvloop",
            )
        },
    }


@contextlib.contextmanager
def services(target: Target, logs: Path) -> Iterator[tuple[dict[str, str], list[int]]]:
    """Start what ``target.services`` names; yield the environment the app needs
    and the services' PIDs (their CPU is the target's, not other load)."""
    env: dict[str, str] = {}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        if "redis" in target.services:
            binary = shutil.which("redis-server")
            if binary is None:
                raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
            port = free_port()
            log = open(logs / f"{target.name}-redis.log", "ab")
            procs.append(
                subprocess.Popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            log.close()
            deadline = time.monotonic() + 10
            while (
                subprocess.run(
                    ["redis-cli", "-p", str(port), "ping"], capture_output=True
                ).stdout.strip()
                != b"PONG"
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.1)
            env["ATHENA_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        yield env, [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def run_target(target: Target, ctx: figures.Context) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "label": target.label,
        "workers": target.workers,
        "worker_class": target.worker_class,
        "app": target.app,
    }
    if target.unavailable:
        entry.update(available=False, reason=target.unavailable)
        return entry
    entry["available"] = True
    waited = figures.wait_quiet(ctx.params.quiet_wait)
    entry["waited_for_quiet_s"] = round(waited, 1)
    results: dict[str, Any] = {}
    spread: dict[str, Any] | None = None
    started = time.monotonic()
    with services(target, ctx.logs) as (env, service_pids):
        ctx.env, ctx.service_pids = env, service_pids
        if ctx.wanted("F1") and "F1" in target.unsupported:
            results["F1"] = {"supported": False, "reason": target.unsupported["F1"]}
        elif ctx.wanted("F1"):
            print(f"  {target.name}: F1 idle pages {ctx.params.levels}", flush=True)
            try:
                results["F1"] = figures.idle_pages(target, ctx)
            except Exception as exc:
                results["F1"] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  {target.name}: F2-F6 with {ctx.params.pages} pages", flush=True)
        try:
            session = figures.connected_figures(target, ctx)
        except Exception as exc:
            session = {
                f: {"error": f"{type(exc).__name__}: {exc}"}
                for f in figures.SESSION_FIGURES
                if ctx.wanted(f)
            }
        entry["client"] = session.pop("_client", None)
        spread = session.pop("_spread", None)
        entry["foreign_load_cores"] = {
            "F1": results.get("F1", {}).get("foreign_load_cores"),
            "F2-F6": session.pop("_foreign_load_cores", None),
        }
        results.update(session)
    if ctx.wanted("F7"):
        results["F7"] = per_worker(target, results, spread)
    entry["figures"] = results
    entry["seconds"] = round(time.monotonic() - started, 1)
    return entry


def per_worker(
    target: Target, results: dict[str, Any], spread: dict[str, Any] | None = None
) -> dict[str, Any]:
    """F7: the push and call figures divided by the number of workers (Redis only).

    ``spread`` is ``/bench/stats`` once the F2–F6 pages were open: how many
    each worker owns (the kernel hands connections to the workers).
    """
    if not target.scale_out:
        return {"supported": False, "reason": "Redis scale-out targets only"}
    missing = [f for f in ("F3", "F4", "F5") if "error" in results.get(f, {"error": "-"})]

    def each(figure: str, key: str) -> Any:
        value = results.get(figure, {}).get(key)
        return value / target.workers if isinstance(value, (int, float)) else None

    out = {
        "workers": target.workers,
        "deliveries_per_s_per_worker": each("F3", "deliveries_per_s"),
        "calls_per_s_per_worker": each("F4", "calls_per_s"),
        "round_trips_per_s_per_worker": each("F5", "round_trips_per_s"),
        "fanout_median_ms": results.get("F2", {}).get("median_ms"),
        "pages_per_worker": spread.get("per_worker") if spread else None,
    }
    if missing:
        out["not_measured"] = f"{', '.join(missing)} not measured in this run"
    return out


def client_bound(results: dict[str, Any], limit: float = 0.9) -> list[str]:
    """Figures during which the load client's core was nearly saturated."""
    found = []
    for name, entry in results["targets"].items():
        for figure, value in entry.get("figures", {}).items():
            busy = value.get("client_busy") if isinstance(value, dict) else None
            if isinstance(busy, float) and busy > limit:
                found.append(f"{name} {figure} ({busy:.0%})")
    return found


def failures(results: dict[str, Any]) -> list[str]:
    bad = []
    for name, entry in results["targets"].items():
        for figure, value in entry.get("figures", {}).items():
            if isinstance(value, dict) and "error" in value:
                bad.append(f"{name} {figure}: {value['error']}")
    return bad


@contextlib.contextmanager
def baseline_tree(rev: str | None, names: list[str]) -> Iterator[list[Target]]:
    """``--baseline REV``: a detached git worktree of REV, removed afterwards;
    yields the targets that run the flask_athena apps of ``names`` from it
    (``athena`` when ``names`` has none; nothing without REV)."""
    if not rev:
        yield []
        return
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = Path(tempfile.mkdtemp(prefix="flask_athena-bench-baseline-"))
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
        capture_output=True,
        check=True,
    )
    try:
        ours = [n for n in names if BY_NAME[n].protocol == "athena"] or ["athena"]
        yield [baseline(commit[:10], str(path), of=name) for name in ours]
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
            capture_output=True,
        )
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small counts (< 2 minutes): the CI smoke test"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where results.json and the PNGs go (default: bench/results)",
    )
    parser.add_argument("--targets", help="comma-separated target names (default: all)")
    parser.add_argument("--only", help="comma-separated figures to run, e.g. F3,F4")
    parser.add_argument(
        "--profile", default="", help="comma-separated targets to record with py-spy during F2-F6"
    )
    parser.add_argument(
        "--athena-ack",
        metavar="N,SECONDS",
        help="the Athena client's ack policy: ack after N unacknowledged "
        "messages or SECONDS after the first (default: athena.js's, "
        f"{ACK_POLICY[0]},{ACK_POLICY[1]:g})",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the flask_athena targets chosen (athena by default) from commit "
        "REV (a temporary git worktree), after this tree's: a change's before and after "
        "in one run",
    )
    parser.add_argument(
        "--soak",
        metavar="MINUTES",
        nargs="?",
        type=float,
        const=10.0,
        help="instead of the figures: hold 10,000 pages for MINUTES (default 10) with "
        "pages coming and going, calls and pushes; RSS and greenlets must come back "
        "(bench/soak.py); with --quick it does not wait for a quiet machine first",
    )
    parser.add_argument(
        "--soak-pages",
        metavar="N",
        type=int,
        default=soak.PAGES,
        help=f"pages the soak holds (default {soak.PAGES:,}); churn and calls scale with it",
    )
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)

    # SIGTERM (a timeout, a CI job cancelled) unwinds like an exception, so
    # the servers and clients started are stopped by their PIDs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    params = figures.QUICK if args.quick else figures.FULL
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Server logs are for debugging a run, not results: keep them out of --out.
    logs = Path(tempfile.gettempdir()) / "flask_athena-bench-logs"
    logs.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the orchestrator is a client too: stay off core 0
    names = args.targets.split(",") if args.targets else [t.name for t in TARGETS]
    unknown = set(names) - {t.name for t in TARGETS}
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {[t.name for t in TARGETS]}")
    ctx = figures.Context(
        params,
        out,
        logs,
        profile=set(filter(None, args.profile.split(","))),
        only=set(args.only.split(",")) if args.only else None,
    )
    if ctx.profile and figures.py_spy() is None:
        parser.error("--profile needs py-spy (pip install -e '.[bench]')")
    if args.athena_ack:
        every, delay = args.athena_ack.split(",")
        ctx.ack = (int(every), float(delay))
    if args.soak is not None:
        if len(names) != 1 and args.targets:
            parser.error("--soak runs one target")
        target = BY_NAME[names[0] if args.targets else "athena"]
        return soak.main(target, ctx, args.soak, args.soak_pages, plots=not args.no_plots)
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "params": {**params.__dict__, "athena_ack": list(ctx.ack or ACK_POLICY)},
        "root": str(ROOT),
        "targets": {},
    }
    started = time.monotonic()
    print(f"flask_athena bench ({params.mode}); results in {out}", flush=True)
    with baseline_tree(args.baseline, names) as extra:
        for target in [*TARGETS, *extra]:
            if target.name not in names and target not in extra:
                continue
            print(f"- {target.label}", flush=True)
            results["targets"][target.name] = run_target(target, ctx)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["goals"] = report.evaluate_goals(results)
    results["errors"] = failures(results)
    results["client_bound"] = client_bound(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_plots:
        report.plot(results, out)
    print()
    print(report.render_table(results))
    print()
    print("Goals (flask_athena, ratios measured in this run):")
    print(report.render_goals(results["goals"], results))
    print()
    print(f"{results['seconds']:.0f} s; wrote {out / 'results.json'}; server logs in {logs}")
    if results["client_bound"]:
        print(
            "WARNING: the load client's core was over 90% busy in "
            + ", ".join(results["client_bound"])
            + ": those throughputs are lower bounds (install uvloop for the client)."
        )
    for line in results["errors"]:
        print(f"FIGURE FAILED: {line}", file=sys.stderr)
    return 1 if results["errors"] else 0
