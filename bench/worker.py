"""A load-client process: ``python -m bench.worker``, driven over stdin/stdout.

Each stdin line is a JSON command ``{"op": name, ...arguments}``; each answer
is one JSON line on stdout with the operation's figures plus this process's
CPU time (``client_cpu``) and wall time (``client_wall``) for the command, so
the suite can show that the client was not the bottleneck.

Every operation is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import sys
import time
from typing import Any

from .client import ACK_POLICY, KINDS, Client, Conn, Phase, now
from .wire import HttpError

JSON = b"Content-Type: application/json\r\n"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


class Worker:
    def __init__(self) -> None:
        self.client: Client | None = None

    @property
    def c(self) -> Client:
        if self.client is None:
            raise RuntimeError("send 'init' first")
        return self.client

    async def _control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, _, reply = await self.c.http.request("POST", path, json.dumps(body).encode(), JSON)
        if status != 200:
            raise HttpError(f"{path} answered {status}: {reply[:200]!r}")
        result: dict[str, Any] = json.loads(reply)
        return result

    def _new_conn(self) -> Conn:
        return KINDS[self.c.kind](self.c)  # type: ignore[call-arg]

    # -- operations ---------------------------------------------------------

    async def op_init(
        self,
        kind: str,
        host: str,
        port: int,
        pool: int = 64,
        ack: list[float] | None = None,
        sources: list[str] | None = None,
    ) -> dict[str, Any]:
        policy = (int(ack[0]), float(ack[1])) if ack else ACK_POLICY
        self.client = Client(kind, host, port, pool, policy, sources)
        return {}

    async def op_open(self, n: int, concurrency: int = 100, timeout: float = 180) -> dict[str, Any]:
        """Open ``n`` more connections (page + stream), ``concurrency`` at a time."""
        slots = asyncio.Semaphore(concurrency)
        failed: dict[str, int] = {}
        opened: list[Conn] = []
        deadline = now() + timeout

        async def one() -> None:
            async with slots:
                if now() > deadline:
                    failed["deadline"] = failed.get("deadline", 0) + 1
                    return
                conn = self._new_conn()
                try:
                    await asyncio.wait_for(conn.open(), 30)
                except (OSError, HttpError, asyncio.TimeoutError, KeyError, ValueError) as exc:
                    name = type(exc).__name__
                    failed[name] = failed.get(name, 0) + 1
                    conn.close()
                    return
                opened.append(conn)

        await asyncio.gather(*(one() for _ in range(n)))
        self.c.conns.extend(opened)
        return {
            "opened": len(opened),
            "failed": sum(failed.values()),
            "errors": failed,
            "total": len(self.c.conns),
        }

    async def op_arm(self, lo: int, hi: int, per_conn: int = 1) -> dict[str, Any]:
        self.c.phase = Phase(lo, hi, per_conn * len(self.c.conns))
        return {"expected": self.c.phase.expected}

    async def op_wait(self, timeout: float) -> dict[str, Any]:
        phase = self.c.phase
        assert phase is not None
        try:
            await asyncio.wait_for(asyncio.shield(phase.done), timeout)
        except asyncio.TimeoutError:
            pass
        self.c.phase = None
        return {
            "count": phase.count,
            "expected": phase.expected,
            "first": phase.first,
            "last": phase.last,
        }

    async def op_fanout(
        self, start: int, rounds: int, gap: float = 0.02, timeout: float = 10
    ) -> dict[str, Any]:
        """One push at a time to every connection: time until the last has it."""
        last_ms: list[float] = []
        median_ms: list[float] = []
        broadcast_ms: list[float] = []
        missing = 0
        for r in range(rounds):
            k = start + r
            phase = self.c.phase = Phase(k, k + 1, len(self.c.conns))
            phase.arrivals = []
            t0 = now()
            reply = await self._control("/bench/push", {"k": k})
            broadcast_ms.append(reply["broadcast_ms"])
            try:
                await asyncio.wait_for(asyncio.shield(phase.done), timeout)
            except asyncio.TimeoutError:
                missing += phase.expected - phase.count
                continue
            last_ms.append((phase.last - t0) * 1000)
            arrivals = sorted(phase.arrivals)
            median_ms.append((arrivals[len(arrivals) // 2] - t0) * 1000)
            await asyncio.sleep(gap)
        self.c.phase = None
        return {
            "pages": len(self.c.conns),
            "rounds": rounds,
            "complete_rounds": len(last_ms),
            "missing": missing,
            "last_ms": last_ms,
            "median_page_ms": median_ms,
            "broadcast_ms": broadcast_ms,
        }

    async def op_sustain(self, start: int, count: int, timeout: float = 60) -> dict[str, Any]:
        """The server pushes ``count`` messages to every connection, back to back."""
        phase = self.c.phase = Phase(start, start + count, count * len(self.c.conns))
        t0 = now()
        await self._control("/bench/sustain", {"start": start, "count": count, "timeout": timeout})
        try:
            await asyncio.wait_for(asyncio.shield(phase.done), timeout)
        except asyncio.TimeoutError:
            pass
        self.c.phase = None
        elapsed = (phase.last - t0) if phase.count else 0.0
        return {
            "pages": len(self.c.conns),
            "expected": phase.expected,
            "delivered": phase.count,
            "elapsed": elapsed,
        }

    async def op_calls(self, concurrency: int, count: int, duration: float) -> dict[str, Any]:
        """Browser → server ``echo`` calls, ``concurrency`` pages each with one in flight."""
        conns = self.c.conns[:concurrency]
        latencies: list[float] = []
        errors: dict[str, int] = {}
        budget = [count]
        deadline = now() + duration

        async def lane(conn: Conn) -> None:
            while budget[0] > 0 and now() < deadline:
                budget[0] -= 1
                value = budget[0]
                t0 = now()
                try:
                    answer = await asyncio.wait_for(conn.call(value), 30)
                except Exception as exc:  # counted and reported, never fatal to the figure
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(now() - t0)
                if answer != value:
                    errors["wrong-answer"] = errors.get("wrong-answer", 0) + 1

        started = now()
        await asyncio.gather(*(lane(conn) for conn in conns))
        elapsed = now() - started
        return {
            "concurrency": len(conns),
            "count": len(latencies),
            "elapsed": elapsed,
            "errors": errors,
            "p50_ms": _ms(_pct(latencies, 0.5)),
            "p99_ms": _ms(_pct(latencies, 0.99)),
        }

    async def op_s2c(
        self, clients: int, per_client: int, count: int, timeout: float = 30
    ) -> dict[str, Any]:
        """Server → browser ``ping`` calls; the connections answer them."""
        body = {"clients": clients, "per_client": per_client, "count": count, "timeout": timeout}
        return await self._control("/bench/s2c", body)

    async def op_replay(
        self, start: int, count: int, rounds: int, timeout: float = 10
    ) -> dict[str, Any]:
        """Drop a stream, let ``count`` messages queue, reconnect: time the replay."""
        conn = self._new_conn()
        if not conn.supports_replay:
            return {"supported": False}
        await asyncio.wait_for(conn.open(), 30)
        times_ms: list[float] = []
        missing = 0
        try:
            for r in range(rounds):
                lo = start + r * count
                last = await conn.drop_stream()
                await self._control("/bench/push_to", {"id": conn.id, "start": lo, "count": count})
                await asyncio.sleep(0.05)  # let the server notice the old stream is gone
                phase = self.c.phase = Phase(lo, lo + count, count)
                t0 = now()
                await asyncio.wait_for(conn.reconnect(last), timeout)
                try:
                    await asyncio.wait_for(asyncio.shield(phase.done), timeout)
                except asyncio.TimeoutError:
                    missing += phase.expected - phase.count
                    continue
                times_ms.append((phase.last - t0) * 1000)
        finally:
            self.c.phase = None
            conn.close()
        return {
            "supported": True,
            "messages": count,
            "rounds": rounds,
            "missing": missing,
            "times_ms": times_ms,
        }

    async def op_churn(
        self,
        drop: int,
        add: int,
        calls: int,
        concurrency: int = 10,
        timeout: float = 60,
        check_order: bool = True,
    ) -> dict[str, Any]:
        """The soak's step: ``drop`` random pages leave, ``add`` new ones come,
        and ``calls`` echo calls (on as many pages, one each) run meanwhile,
        ``concurrency`` at a time."""
        self.c.check_order = check_order
        conns = self.c.conns
        random.shuffle(conns)
        leaving = conns[len(conns) - min(drop, len(conns)) :]
        del conns[len(conns) - len(leaving) :]
        errors: dict[str, int] = {}

        def count(exc: BaseException) -> None:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        async def leave(conn: Conn) -> None:
            try:
                await asyncio.wait_for(conn.leave(), 30)
            except Exception as exc:  # counted and reported
                count(exc)

        slots = asyncio.Semaphore(concurrency)
        # One call per page: a page has one sequenced POST in flight, as in athena.js.
        callers = random.sample(conns, min(calls, len(conns)))

        async def call(k: int, conn: Conn) -> None:
            async with slots:
                try:
                    if await asyncio.wait_for(conn.call(k), 30) != k:
                        errors["wrong-answer"] = errors.get("wrong-answer", 0) + 1
                except Exception as exc:  # counted and reported
                    count(exc)

        started = now()
        results = await asyncio.wait_for(
            asyncio.gather(
                asyncio.gather(*(leave(c) for c in leaving)),
                self.op_open(add, concurrency=concurrency, timeout=timeout),
                asyncio.gather(*(call(k, conn) for k, conn in enumerate(callers))),
            ),
            timeout + 30,
        )
        opened = results[1]
        for name, n in opened["errors"].items():
            errors[f"open:{name}"] = errors.get(f"open:{name}", 0) + n
        return {
            "left": len(leaving),
            "opened": opened["opened"],
            "calls": len(callers),
            "errors": errors,
            "total": len(self.c.conns),
            "elapsed": now() - started,
        }

    async def op_leave_all(self, concurrency: int = 100) -> dict[str, Any]:
        """Every page leaves (stream closed, beacon sent)."""
        conns, self.c.conns = self.c.conns, []
        slots = asyncio.Semaphore(concurrency)
        errors: dict[str, int] = {}

        async def leave(conn: Conn) -> None:
            async with slots:
                try:
                    await asyncio.wait_for(conn.leave(), 30)
                except Exception as exc:  # counted and reported
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

        await asyncio.gather(*(leave(c) for c in conns))
        return {"left": len(conns), "errors": errors}

    async def op_status(self) -> dict[str, Any]:
        return {
            "total": len(self.c.conns),
            "closed_streams": self.c.closed_streams,
            "errors": self.c.errors,
            "requests": self.c.http.requests,
            "connects": self.c.http.connects,
            "retries": self.c.http.retries,
            "stale_dropped": self.c.http.stale,
        }

    async def op_close(self) -> dict[str, Any]:
        if self.client is not None:
            for conn in self.client.conns:
                conn.close()
            self.client.conns.clear()
            self.client.http.close()
        return {}


def _ms(value: float | None) -> float | None:
    return None if value is None else value * 1000


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while True:
        line = await reader.readline()
        if not line:
            break
        command = json.loads(line)
        op = command.pop("op")
        cpu0, wall0 = _cpu(), time.monotonic()
        try:
            result = await getattr(worker, f"op_{op}")(**command)
            result["ok"] = True
        except Exception as exc:  # reported to the suite, which fails the figure
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        result["client_cpu"] = _cpu() - cpu0
        result["client_wall"] = time.monotonic() - wall0
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        if op == "close":
            break


def main() -> None:
    try:
        if os.environ.get("BENCH_NO_UVLOOP"):
            raise ImportError("BENCH_NO_UVLOOP is set")
        import uvloop  # optional: a C event loop makes the client cheaper
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
