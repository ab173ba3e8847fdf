"""Shared helpers for tests that start real processes on 127.0.0.1.

Every process started here is stopped by its PID; every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import requests

ROOT = Path(__file__).resolve().parent.parent
#: Screenshots, logs and other artifacts of the test run.
OUTPUT = ROOT / "test-output"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02
) -> None:
    """Poll ``predicate`` until it is truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class LiveServer:
    """A gunicorn gevent server running ``app_spec`` on 127.0.0.1.

    ``env`` adds environment variables (the test apps read their ATHENA_*
    settings from it). Output goes to ``test-output/logs/<name>.log``.
    """

    def __init__(
        self,
        app_spec: str,
        name: str,
        workers: int = 1,
        env: dict[str, str] | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.app_spec = app_spec
        self.name = name
        self.workers = workers
        self.env = env or {}
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = OUTPUT / "logs" / f"{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str = "/healthz", timeout: float = 60.0) -> LiveServer:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            str(self.workers),
            "--worker-connections",
            "4000",
            "-b",
            f"127.0.0.1:{self.port}",
            "--graceful-timeout",
            "2",
            # gunicorn >= 23 shares one control socket path between instances.
            "--no-control-socket",
            "--log-level",
            "warning",
            *self.extra_args,
            self.app_spec,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early; see {self.log_path}")
            try:
                return requests.get(self.url + ready_path, timeout=1).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=timeout, interval=0.1)
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
