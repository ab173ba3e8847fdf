"""Processes the suite starts: gunicorn servers and load-client workers.

Servers run on core 0 and clients on core 1 (``taskset``), each with its
file-descriptor soft limit raised to the hard limit. Every process is
stopped by its PID in a ``finally``; every wait has a deadline.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CORE, CLIENT_CORE = "0", "1"


#: The open-files limit the suite asks for: 100,000 pages on one worker
#: (figure F1) take one fd each in the server, and the clients' share.
NOFILE_WANTED = 262_144


def raise_nofile() -> int:
    """Raise this process's fd limits as far as it may; return the soft limit.

    The hard limit goes up to :data:`NOFILE_WANTED` (at most the kernel's
    ``fs.nr_open``) where the process may (root, or ``CAP_SYS_RESOURCE``);
    else the soft limit is raised to the hard one.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_WANTED
    try:
        with open("/proc/sys/fs/nr_open") as f:
            wanted = min(wanted, int(f.read()))
    except (OSError, ValueError):
        pass
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass  # not allowed to raise the hard limit: use what there is
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pinned(core: str, cmd: list[str]) -> list[str]:
    """``cmd`` pinned to ``core`` with taskset (unpinned on a 1-core machine)."""
    if (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return cmd
    return ["taskset", "-c", core, *cmd]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            found.append(int(entry))
                except (OSError, IndexError, ValueError):
                    continue
        return found


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def nofile_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return 1024


class Server:
    """``gunicorn -w N -k <worker class>`` serving one benchmark app on 127.0.0.1."""

    def __init__(
        self,
        app: str,
        worker_class: str,
        workers: int,
        log_dir: Path,
        name: str,
        env: dict[str, str] | None = None,
        root: Path = ROOT,
    ) -> None:
        self.app, self.worker_class, self.workers = app, worker_class, workers
        self.env = env or {}
        #: the tree the app and flask_athena are imported from
        self.root = root
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        cmd = pinned(
            SERVER_CORE,
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                self.worker_class,
                "-w",
                str(self.workers),
                "--worker-connections",
                "120000",  # the default 1000 would cap every figure (F1: 100,000 pages)
                "--backlog",
                "4096",
                "--keep-alive",
                "75",
                "--timeout",
                "120",
                "--graceful-timeout",
                "3",
                "--log-level",
                "warning",
                "-b",
                f"127.0.0.1:{self.port}",
                self.app,
            ],
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(self.root), **self.env}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=raise_nofile,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early; see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as reply:
                    if reply.status == 200:
                        self.worker_pids = children(self.proc.pid)
                        if len(self.worker_pids) == self.workers:
                            return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn not ready in {timeout}s; see {self.log_path}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        """The master and its workers."""
        return ([self.proc.pid] if self.proc is not None else []) + self.worker_pids

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.worker_pids)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.worker_pids)

    def fd_limit(self) -> int:
        return min(nofile_limit(pid) for pid in self.worker_pids)

    def post(self, path: str, body: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result

    def get(self, path: str, timeout: float = 30) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as reply:
            result: dict[str, Any] = json.loads(reply.read())
            return result

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ClientProc:
    """One ``python -m bench.worker`` process pinned to the client core."""

    def __init__(
        self,
        kind: str,
        port: int,
        pool: int = 64,
        ack: tuple[int, float] | None = None,
        sources: list[str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            pinned(CLIENT_CORE, [sys.executable, "-m", "bench.worker"]),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            preexec_fn=raise_nofile,
        )
        self.pid = self.proc.pid
        self.call(
            "init",
            kind=kind,
            host="127.0.0.1",
            port=port,
            pool=pool,
            ack=list(ack) if ack else None,
            sources=sources,
        )

    def send(self, op: str, **args: Any) -> None:
        stdin: IO[bytes] = self.proc.stdin  # type: ignore[assignment]
        stdin.write(json.dumps({"op": op, **args}).encode() + b"\n")
        stdin.flush()

    def receive(self) -> dict[str, Any]:
        # The worker bounds every operation in time; a dead worker ends the read.
        stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"load client {self.pid} exited ({self.proc.poll()})")
        result: dict[str, Any] = json.loads(line)
        if not result.get("ok"):
            raise RuntimeError(f"load client: {result.get('error')}")
        return result

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.receive()

    def stop(self) -> None:
        # SIGTERM ends the worker at once; the kernel closes its sockets.
        _stop(self.proc, timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
