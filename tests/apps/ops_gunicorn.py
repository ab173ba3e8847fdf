"""gunicorn settings of the operations tests: prometheus_client's multiprocess mode.

What README "Running it in production" tells users to put in their own
gunicorn.conf.py: a dead worker's live gauges are dropped from the sums.
"""

from __future__ import annotations

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
