"""Supervised background greenlets: the loops that serve a whole worker.

A loop that serves every page of a worker (the Redis writer, the pub/sub
subscriber, the stream poller, the inbox server, the heartbeat) must not be
killed by one bad message. Each loop body handles its own items: an error in
one item is logged once, that item's page is failed explicitly, and the loop
goes on. :class:`Loop` is the net under that: if the body dies anyway, it is
logged, counted in :attr:`Loop.restarts` and started again after a backoff
with jitter and a cap. :meth:`Loop.stop` kills the greenlet *and joins it*,
with a timeout.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

import gevent

logger = logging.getLogger("flask_athena")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 5.0
#: A body that ran this long before dying starts again with the shortest backoff.
_HEALTHY_RUN = 30.0


def backoff(tries: int) -> float:
    """Seconds before retry ``tries`` (from 1): exponential, jittered, capped."""
    return float(random.uniform(0.5, 1.0) * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(tries, 10)))


@dataclass(frozen=True)
class LoopHealth:
    """What :attr:`Loop.health` reports: safe to read from any greenlet."""

    #: The loop's name (``"writer"``, ``"subscriber"``, ...).
    name: str
    #: Whether its greenlet runs now.
    alive: bool
    #: How many times its body died and was started again.
    restarts: int
    #: Items (messages, requests, writes) it refused and failed explicitly.
    failed_items: int


class Loop:
    """One background greenlet, restarted with backoff when its body dies.

    Subclass it and write :meth:`run` (or pass ``body``); ``run`` executes in
    the loop's greenlet and normally never returns; if it returns, the loop
    ends. ``gevent.GreenletExit`` (from :meth:`stop`) ends it at once; any
    other exception is logged with its traceback, counted in
    :attr:`restarts`, and ``run`` starts again after :func:`backoff`.

    A loop belongs to the process that started it: after a fork it is not
    :attr:`alive`, and :meth:`start` starts it afresh with zeroed counters.
    """

    #: The loop's name in logs and :class:`LoopHealth`.
    name = "loop"

    def __init__(self, name: str | None = None, body: Callable[[], None] | None = None) -> None:
        if name is not None:
            self.name = name
        self._body = body
        self._greenlet: gevent.Greenlet | None = None
        self._pid: int | None = None
        #: How many times :meth:`run` died and was started again.
        self.restarts = 0
        #: Items refused by :meth:`run` (see :meth:`item_failed`).
        self.failed_items = 0

    def run(self) -> None:
        """The loop's body (runs in its greenlet); the default calls ``body``."""
        if self._body is None:
            raise NotImplementedError
        self._body()

    @property
    def alive(self) -> bool:
        """Whether the loop's greenlet runs in this process."""
        return self._greenlet is not None and not self._greenlet.dead and self._pid == os.getpid()

    @property
    def health(self) -> LoopHealth:
        """A snapshot of the loop's state (any greenlet, never blocks)."""
        return LoopHealth(self.name, self.alive, self.restarts, self.failed_items)

    def start(self) -> None:
        """Spawn the greenlet (no-op while it runs). Does not block."""
        if self.alive:
            return
        if self._pid != os.getpid():
            self.restarts = self.failed_items = 0
            self._pid = os.getpid()
        self._greenlet = gevent.spawn(self._supervise)

    def stop(self, timeout: float = 5.0) -> bool:
        """Kill the greenlet and wait up to ``timeout`` seconds for it to end.

        Blocks the calling greenlet; returns whether the loop ended in time.
        """
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is None or self._pid != os.getpid():
            return True
        greenlet.kill(block=True, timeout=timeout)
        return bool(greenlet.dead)

    def item_failed(self, what: str, exc: BaseException) -> None:
        """Log one refused item (once, with its traceback) and count it.

        Called by :meth:`run` from its ``except Exception`` boundary; the body
        then fails the item's page or caller explicitly and goes on.
        """
        self.failed_items += 1
        logger.error("flask_athena: %s loop dropped %s", self.name, what, exc_info=exc)

    def _supervise(self) -> None:
        tries = 0
        while True:
            started = monotonic()
            try:
                self.run()
                return
            except Exception:  # boundary: the loop serves the whole worker
                self.restarts += 1
                tries = 1 if monotonic() - started > _HEALTHY_RUN else tries + 1
                logger.exception("flask_athena: %s loop died; restarting it", self.name)
            gevent.sleep(backoff(tries))
