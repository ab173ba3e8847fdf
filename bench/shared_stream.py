"""F8: ten pages on one shared stream against ten streams of their own.

The tabs of one browser share one event stream (DESIGN §9, README "Every
tab works"): a session with ten pages holds one connection instead of ten.
This measures what that costs the server per page, on the bench's
flask_athena app (``bench/apps/athena_app.py``, ``gunicorn -k gevent -w 1``
on core 0, the client in this process on core 1)::

    python -m bench.shared_stream             # 100 sessions x 10 pages, 100 pushes
    python -m bench.shared_stream --quick     # 20 sessions x 10 pages, 20 pushes

For each mode a fresh server renders ``sessions`` x 10 pages (ten per
cookie jar, as ten tabs would) and attaches them: *separate*, each page
``GET <prefix>/<page>/events`` (one connection per page, as with
``ATHENA_SHARED_STREAM = False``); *shared*, each session one
``GET <prefix>/events?pages=...`` for its ten pages (what the leader tab
opens). Then:

- **RSS per page**: the worker's ``VmRSS`` once every stream is attached,
  minus its ``VmRSS`` with 10 warm-up pages (page and stream alike), over
  the pages (as F1 measures);
- **server CPU per delivery** and **deliveries/s**: ``/bench/sustain``
  broadcasts ``pushes`` messages to every page; from the trigger until the
  client has every message on every page, the worker's ``utime+stime``.

Both are printed with the ratio shared/separate. A benchmark, not a test:
nothing here fails on a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .procs import Server, raise_nofile

APP = "bench.apps.athena_app:app"
PAGES_PER_SESSION = 10
WARM_PAGES = 10
_META = re.compile(r'<meta name="athena-config" content="([^"]*)">')


class Reader:
    """Counts the messages (``id:`` lines) of one event stream as they arrive."""

    def __init__(self) -> None:
        self.count = 0
        self._rest = b""

    def feed(self, chunk: bytes) -> None:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()
        self.count += sum(1 for line in lines if line.startswith(b"id: "))


async def _render(http: Any, url: str, count: int) -> list[dict[str, Any]]:
    configs = []
    for _ in range(count):
        async with http.get(url + "/") as reply:
            text = await reply.text()
        match = _META.search(text)
        if match is None:
            raise RuntimeError("no athena-config in the page")
        configs.append(json.loads(html.unescape(match.group(1))))
    return configs


async def _read(http: Any, url: str, reader: Reader, opened: asyncio.Event) -> None:
    async with http.get(url, timeout=None) as reply:
        if reply.status != 200:
            raise RuntimeError(f"{url}: {reply.status}")
        opened.set()
        async for chunk in reply.content.iter_any():
            reader.feed(chunk)


async def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not done within {timeout}s")
        await asyncio.sleep(0.02)


def _stable_rss(server: Server) -> int:
    """The worker's RSS once two samples 0.5 s apart agree (within 1%), as F1."""
    last = server.rss_kib()
    for _ in range(20):
        time.sleep(0.5)
        now = server.rss_kib()
        if abs(now - last) <= last * 0.01:
            return now
        last = now
    return last


async def measure(server: Server, mode: str, sessions: int, pushes: int) -> dict[str, Any]:
    import aiohttp

    url = server.url
    connector = aiohttp.TCPConnector(limit=0)
    jars = [aiohttp.CookieJar(unsafe=True) for _ in range(sessions + 1)]
    clients = [
        aiohttp.ClientSession(connector=connector, connector_owner=False, cookie_jar=j)
        for j in jars
    ]
    tasks: list[asyncio.Task[None]] = []
    try:
        # Warm-up: first-request costs paid, and the baseline holds streams too.
        warm = await _render(clients[-1], url, WARM_PAGES)
        warm_readers = [Reader() for _ in warm]
        for config, reader in zip(warm, warm_readers):
            opened = asyncio.Event()
            tasks.append(
                asyncio.create_task(_read(clients[-1], url + config["events"], reader, opened))
            )
            await asyncio.wait_for(opened.wait(), 30)
        await _wait(lambda: server.get("/bench/stats")["connected"] >= WARM_PAGES, 30, "warm-up")
        base_rss = _stable_rss(server)
        per_session = [await _render(c, url, PAGES_PER_SESSION) for c in clients[:-1]]
        pages = sessions * PAGES_PER_SESSION
        readers: list[Reader] = []
        for client, configs in zip(clients, per_session):
            if mode == "shared":
                query = ",".join(f"{c['page']}:0" for c in configs)
                targets = [f"{url}{configs[0]['shared']['events']}?pages={query}"]
            else:
                targets = [url + c["events"] for c in configs]
            for target in targets:
                reader = Reader()
                readers.append(reader)
                opened = asyncio.Event()
                tasks.append(asyncio.create_task(_read(client, target, reader, opened)))
                await asyncio.wait_for(opened.wait(), 30)
        want = pages + WARM_PAGES
        await _wait(lambda: server.get("/bench/stats")["connected"] >= want, 60, "attach")
        rss = _stable_rss(server)
        cpu0, t0 = server.cpu_seconds(), time.monotonic()
        server.post("/bench/sustain", {"start": 0, "count": pushes, "timeout": 120})
        deliveries = pushes * pages
        await _wait(lambda: sum(r.count for r in readers) >= deliveries, 120, "deliveries")
        elapsed, cpu = time.monotonic() - t0, server.cpu_seconds() - cpu0
        return {
            "mode": mode,
            "pages": pages,
            "connections": len(readers),
            "rss_per_page_kib": round((rss - base_rss) / pages, 1),
            "cpu_us_per_delivery": round(cpu / (deliveries + pushes * WARM_PAGES) * 1e6, 1),
            "deliveries_per_s": round(deliveries / elapsed),
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.close()
        await connector.close()


def run(sessions: int, pushes: int) -> dict[str, Any]:
    logs = Path(tempfile.gettempdir()) / "flask_athena-bench-logs"
    results: dict[str, Any] = {}
    for mode in ("separate", "shared"):
        with Server(APP, "gevent", 1, logs, f"shared-stream-{mode}") as server:
            results[mode] = asyncio.run(measure(server, mode, sessions, pushes))
    return results


def render(results: dict[str, Any]) -> str:
    sep, shared = results["separate"], results["shared"]
    rows = [
        ("pages", "pages", "{:,}"),
        ("connections", "connections", "{:,}"),
        ("RSS KiB/page (page + stream)", "rss_per_page_kib", "{:.1f}"),
        ("server CPU us/delivery", "cpu_us_per_delivery", "{:.1f}"),
        ("deliveries/s", "deliveries_per_s", "{:,}"),
    ]
    lines = [f"{'':30} {'separate':>10} {'shared':>10} {'shared/sep':>10}"]
    for label, key, fmt in rows:
        a, b = sep[key], shared[key]
        ratio = f"{b / a:.2f}" if a else "-"
        lines.append(f"{label:30} {fmt.format(a):>10} {fmt.format(b):>10} {ratio:>10}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 sessions, 20 pushes")
    parser.add_argument("--sessions", type=int, help="sessions of 10 pages (default 100)")
    parser.add_argument("--pushes", type=int, help="messages pushed to every page (default 100)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args(argv)
    sessions = options.sessions or (20 if options.quick else 100)
    pushes = options.pushes or (20 if options.quick else 100)
    raise_nofile()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the client: off the server's core
    results = run(sessions, pushes)
    print(f"F8: {PAGES_PER_SESSION} pages per session, {sessions} sessions, {pushes} pushes")
    print(render(results))
    if options.json:
        options.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
