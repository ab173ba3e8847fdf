"""The Redis writer's cost per message: one XADD each, or one script run per run.

A micro-benchmark (not part of ``python -m bench``): it starts a private
``redis-server`` on 127.0.0.1 (stopped by its PID) and has the broker's
:class:`~flask_athena.broker.redis_writer.StreamWriter` write broadcasts to
``--pages`` page streams, ``--messages`` messages each, in batches as the
writer takes them (1,000 writes). *xadd* is the writer as it was: one
``XADD`` per message in the pipeline (redis-py packs each command and parses
each reply); *xadd_many* is the writer now: a run of messages is one
``XADD_MANY`` script run. The two alternate ``--rounds`` times in one run;
the figure is this process's CPU time per message (``time.process_time``:
the worker's side; the ``redis-server`` CPU is not in it and is reported
apart). Every stream is checked to hold every message, in order::

    python -m bench.redis_writer                  # 1,000 pages x 30 messages, 3 rounds
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from typing import Any

import redis

from flask_athena.broker.redis_common import Connection, out_key
from flask_athena.broker.redis_writer import BATCH, StreamWriter, Write

from .procs import cpu_seconds, free_port

TEXT = '{"type":"call","call":null,"widget":1,"method":"hear","args":[1,"bob","hello"]}'


class Handle:
    """What the writer reads of a page's outbox."""

    def __init__(self, page_id: str) -> None:
        self.page_id = page_id
        self.first_seq = 1
        self.reader: str | None = None


class OneXaddEach(StreamWriter):
    """The writer before: every message its own XADD in the pipeline."""

    def _append(self, pipe: Any, run: list[Any], at: list[int]) -> None:
        for item in run:
            super()._append(pipe, [item], at)


def measure(writer: StreamWriter, client: redis.Redis, pages: int, messages: int) -> float:
    """CPU seconds of this process per message written."""
    client.flushdb()
    handles: list[Any] = [Handle(f"p{n}") for n in range(pages)]
    pipe = client.pipeline(transaction=False)
    for handle in handles:
        pipe.xadd(out_key(handle.page_id), {"d": ""}, id="0-1")
    pipe.execute()
    writes: list[Write] = [
        ("xadd", handle, seq, TEXT) for seq in range(1, messages + 1) for handle in handles
    ]
    started = time.process_time()
    for at in range(0, len(writes), BATCH):
        writer.write(writes[at : at + BATCH])
    spent = time.process_time() - started
    for handle in handles[:: max(1, pages // 10)]:
        ids = [entry_id for entry_id, _ in client.xrange(out_key(handle.page_id))]
        assert ids == ["0-1"] + [f"{seq}-0" for seq in range(1, messages + 1)], handle.page_id
    return spent / len(writes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_writer")
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        conn = Connection(client, redis.exceptions, "bench", None)
        writers: dict[str, StreamWriter] = {
            "xadd": OneXaddEach({}, lambda page_id: None),
            "xadd_many": StreamWriter({}, lambda page_id: None),
        }
        for writer in writers.values():
            writer.attach(conn)
        cpu: dict[str, list[float]] = {name: [] for name in writers}
        redis_cpu: dict[str, list[float]] = {name: [] for name in writers}
        for _ in range(args.rounds):
            for name, writer in writers.items():
                before = cpu_seconds(server.pid)
                cpu[name].append(measure(writer, client, args.pages, args.messages))
                redis_cpu[name].append(
                    (cpu_seconds(server.pid) - before) / (args.pages * args.messages)
                )
        print(f"{args.pages} pages x {args.messages} messages, {args.rounds} rounds")
        print("writer | this process µs/message (each round) | redis-server µs/message (median)")
        for name in writers:
            rounds = ", ".join(f"{1e6 * x:.1f}" for x in cpu[name])
            print(f"{name} | {rounds} | {1e6 * statistics.median(redis_cpu[name]):.1f}")
    finally:
        server.terminate()
        server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
