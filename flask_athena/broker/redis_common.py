"""What the Redis broker's parts share: key names, timings, this process's connection.

Every key is under ``athena:``; ``docs/scale-out.rst`` has the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import signals

BROADCAST_CHANNEL = "athena:bc"
#: Seconds a worker's liveness key lives; refreshed every WORKER_BEAT seconds.
WORKER_TTL = 5
WORKER_BEAT = 1.0
#: Seconds a page's keys live without a refresh by their owner.
PAGE_TTL = 15
PAGE_REFRESH = 5.0
#: Seconds a forwarded request may wait in an inbox nobody reads.
INBOX_TTL = 60
#: Messages queued for the writer before publishing waits for room.
MAX_QUEUED = 100_000
#: Seconds a publish waits for room in a full writer queue (then
#: BrokerUnavailable: Redis is not keeping up, or unreachable).
ROOM_WAIT = 10.0
#: Forwarded requests one worker runs at once (more wait in its inbox).
MAX_FORWARDED = 500
#: Redis connections one worker opens at most; more requests wait for one.
MAX_REDIS_CONNECTIONS = 64
#: Seconds a request waits for a free Redis connection (then BrokerUnavailable).
POOL_WAIT = 5.0


def page_key(page_id: str) -> str:
    """The hash naming page ``page_id``'s owner and stream generation."""
    return f"athena:page:{page_id}"


def out_key(page_id: str) -> str:
    """The Redis stream holding page ``page_id``'s outbox."""
    return f"athena:out:{page_id}"


def worker_key(wid: str) -> str:
    """The liveness key of worker ``wid``."""
    return f"athena:worker:{wid}"


#: What every worker's liveness key matches (``SCAN``).
WORKER_KEY_PATTERN = "athena:worker:*"


def inbox_key(wid: str) -> str:
    """The list of requests forwarded to worker ``wid``."""
    return f"athena:inbox:{wid}"


def wake_channel(wid: str) -> str:
    """Worker ``wid``'s own pub/sub channel (stream wake-ups, replies)."""
    return f"athena:w:{wid}"


def entry_seq(entry_id: str) -> int:
    """The message seq of a stream entry id ``<seq>-0``."""
    return int(entry_id.partition("-")[0])


#: Seconds an idle loop sleeps before it looks at its queue again (every
#: wait has a timeout: a lost wake-up costs at most this long).
IDLE_WAIT = 1.0


@dataclass
class Connection:
    """This process's Redis client and identity, shared by the broker's loops.

    Made once per process on first use (see ``RedisBroker``), after gunicorn
    forked and gevent patched the standard library.
    """

    #: A ``redis.Redis`` on a blocking connection pool (decoded responses).
    client: Any
    #: ``redis.exceptions``: the module is imported only when Redis is used.
    errors: Any
    #: This worker's id (a fresh uuid per process).
    wid: str
    #: The Flask app: the sender of the broker's signals.
    app: Any

    def failed(self, operation: str, error: BaseException) -> None:
        """Send :data:`~flask_athena.signals.broker_error` (metrics count it)."""
        signals.broker_error.send(self.app, operation=operation, error=error)

    def transient(self, error: BaseException) -> bool:
        """Whether ``error`` is the connection's (retry later) rather than the item's."""
        return isinstance(error, (self.errors.ConnectionError, self.errors.TimeoutError))
