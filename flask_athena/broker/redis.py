"""The Redis broker: any number of workers and hosts sharing one Redis.

Chosen by ``ATHENA_BROKER_URL = "redis://..."``; ``docs/scale-out.rst`` is the
design. In short, with every key under ``athena:``:

- ``athena:page:<page>`` (hash ``owner``, ``gen``): which worker owns the page;
  ``athena:out:<page>`` (stream): the page's outbox, entry id ``<seq>-0``,
  trimmed to ``ATHENA_OUTBOX_SIZE`` messages and ``ATHENA_OUTBOX_BYTES``, and
  on ack. The owner refreshes both TTLs
  while the page lives and deletes both when it closes.
- ``athena:worker:<wid>``: the worker's liveness key (a short TTL, refreshed
  every second). A page whose owner's key is gone is gone.
- ``athena:inbox:<wid>`` (list): requests forwarded to the worker that owns
  their page. Replies, stream wake-ups and broadcasts travel by pub/sub: each
  worker holds ONE subscriber connection (``athena:bc`` for broadcasts and its
  own ``athena:w:<wid>``), never one per open stream.

:class:`RedisBroker` is the façade the rest of the package sees; the work is
done by one supervised loop per job (see :mod:`.loops`), each in its module:
:class:`~.redis_writer.StreamWriter` (only the owner writes a page's stream,
in order, pipelined), :class:`~.redis_poller.StreamPoller` (reads of streams
served for other workers' pages), :class:`~.redis_subscriber.Subscriber`
(the pub/sub connection), :class:`~.redis_inbox.InboxServer` (forwarded
requests) and :class:`~.redis_liveness.Heartbeat`. ``redis`` is imported
in this package only, so it stays an optional dependency.

Every Redis failure seen by a caller is :class:`~flask_athena.errors.BrokerUnavailable`
(503); the loops reconnect with backoff, jitter and a cap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import gevent

from .. import signals
from ..errors import BrokerUnavailable
from ..protocol import sse_message
from .loops import Loop, LoopHealth
from .memory import Wakeups
from .redis_common import (
    BROADCAST_CHANNEL,
    MAX_REDIS_CONNECTIONS,
    PAGE_TTL,
    POOL_WAIT,
    WORKER_TTL,
    Connection,
    entry_seq,
    out_key,
    page_key,
    worker_key,
)
from .redis_inbox import Forwarder, InboxServer
from .redis_liveness import Heartbeat, LivenessCache
from .redis_outbox import RedisOutbox, RedisReader
from .redis_poller import PollAnswer, StreamPoller
from .redis_reports import ReportWriter, check, read_reports, redis_client, report_prefix
from .redis_subscriber import Replies, Subscriber, WakeUps
from .redis_writer import StreamWriter, Write

if TYPE_CHECKING:
    from ..presence import PresenceBackend
    from ..state import AthenaState
    from . import BrokerCheck, Deliver, Handler, Outbox, Report, WorkerReports

logger = logging.getLogger("flask_athena")

__all__ = ["RedisBroker"]


class RedisBroker:
    """Outboxes in Redis streams, broadcasts over pub/sub, requests forwarded to owners.

    One per app per worker process. Nothing connects before first use, and
    the worker id is made per process, so the object survives gunicorn's fork.
    It is its own :class:`~flask_athena.broker.WorkerLink`.
    """

    #: Shown by the inspector and the CLI.
    kind = "redis"

    def __init__(
        self,
        url: str,
        call_timeout: float,
        namespace: str = "",
        outbox_bytes: int | None = None,
    ) -> None:
        if importlib.util.find_spec("redis") is None:  # pragma: no cover - the install
            raise RuntimeError(
                "ATHENA_BROKER_URL needs the redis package: pip install 'flask_athena[redis]'"
            )
        self.url = url
        #: Pub/sub channels ignore Redis database numbers: broadcasts of
        #: different apps (or databases) must not meet on one channel.
        self._namespace = namespace
        self.call_timeout = call_timeout
        #: Bytes of unacknowledged messages a page's outbox keeps (``None``: no byte bound).
        self.outbox_bytes = outbox_bytes
        #: Called with ``(page_id, what)`` when an owned page lost its keys
        #: (``"lost"``) or its remote stream's worker died (``"reader"``).
        self.on_lost: Callable[[str, str], None] | None = None
        #: The Flask app: the sender of the broker's signals (set by the app state).
        self.app: Any = None
        #: Delivers each broadcast to this worker's elements (set by ``topics.Topics``).
        self.on_broadcast: Deliver | None = None
        self._outboxes: dict[str, RedisOutbox] = {}
        #: Wake-up events of the streams this worker serves for other workers' pages.
        self.wakeups = WakeUps()
        #: Wakes the streams this worker serves for its own pages (their local copies).
        self.local_wakeups = Wakeups()
        replies = Replies()
        self._liveness = LivenessCache()
        self._forwarder = Forwarder(replies, self.alive)
        self._writer = StreamWriter(self._outboxes, self._fail_page)
        self._poller = StreamPoller()
        self._subscriber = Subscriber(self.wakeups, replies, self._deliver)
        self._inbox = InboxServer(self._subscriber.subscribed)
        self._heartbeat = Heartbeat(self._outboxes, self._page_lost)
        self._loops: tuple[Loop, ...] = (
            self._heartbeat,
            self._subscriber,
            self._inbox,
            self._writer,
            self._poller,
        )
        self._pid: int | None = None
        self._conn: Connection | None = None

    # -- process start -------------------------------------------------------

    @property
    def handler(self) -> Handler | None:
        """Runs requests other workers forward to this one (set by the app state)."""
        return self._inbox.handler

    @handler.setter
    def handler(self, handler: Handler | None) -> None:
        self._inbox.handler = handler

    @property
    def worker_id(self) -> str:
        """This worker's id (connects on first use)."""
        return self._start().wid

    @property
    def link(self) -> RedisBroker:
        """This broker: it spans workers."""
        return self

    def _start(self) -> Connection:
        """Connect and start this process's loops on first use."""
        if self._pid == os.getpid() and self._conn is not None:
            return self._conn
        # Imported in the worker on first use, after gevent patched the
        # standard library (gunicorn --preload imports the app before that).
        import redis

        self._pid = os.getpid()
        # A blocking pool: under load, greenlets wait (bounded) for a free
        # connection instead of failing with "Too many connections".
        pool = redis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=MAX_REDIS_CONNECTIONS,
            timeout=POOL_WAIT,
            decode_responses=True,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
            # One quick retry (a stale pooled connection); an outage fails
            # fast with BrokerUnavailable instead of stalling the request.
            retry=redis.retry.Retry(redis.backoff.ExponentialBackoff(cap=0.2, base=0.05), 1),
        )
        client = redis.Redis(connection_pool=pool)
        conn = self._conn = Connection(client, redis.exceptions, uuid.uuid4().hex, self.app)
        # Nothing of another process (before a fork) is ours.
        self._outboxes.clear()
        self.wakeups.clear()
        self._writer.attach(conn)
        self._poller.attach(conn)
        self._subscriber.attach(conn, self.broadcast_channel(client))
        self._inbox.attach(conn)
        self._heartbeat.attach(conn)
        for loop in self._loops:
            loop.start()
        return conn

    def health(self) -> list[LoopHealth]:
        """The state of this worker's background loops.

        Each reports whether it runs, how often it died and was restarted,
        and how many items it refused; a metrics exporter or a health check
        reads this from any greenlet (never blocks, never connects).
        """
        return [loop.health for loop in self._loops]

    def _ready(self) -> Connection:
        """The connection, once this worker is alive and subscribed; else BrokerUnavailable."""
        conn = self._start()
        if not self._subscriber.subscribed.wait(3.0):
            error = BrokerUnavailable("Redis is unreachable (ATHENA_BROKER_URL).")
            signals.broker_error.send(self.app, operation="connect", error=error)
            raise error
        return conn

    @contextmanager
    def _errors(self, conn: Connection) -> Iterator[None]:
        try:
            yield
        except conn.errors.RedisError as exc:
            conn.failed("request", exc)
            raise BrokerUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    # -- the Broker protocol -------------------------------------------------

    def create_outbox(self, page_id: str, size: int) -> RedisOutbox:
        """A :class:`~.redis_outbox.RedisOutbox` for page ``page_id`` (never
        blocks; the writer loop writes it to Redis)."""
        return RedisOutbox(self, page_id, size, self.outbox_bytes)

    def register_page(self, page_id: str, outbox: Outbox) -> None:
        """Record a new page as owned by this worker (blocks for one round trip).

        The stream is created here with a placeholder entry ``0-1`` so readers
        can tell "nothing yet" from "no such page". This worker's liveness key
        is written with the page: after Redis lost its keys (a restart), a
        worker already serving again may not have beaten yet, and a page whose
        owner has no key is deleted by the first :meth:`locate` that sees it.
        """
        if not isinstance(outbox, RedisOutbox) or outbox.page_id != page_id:
            raise TypeError("register_page takes an outbox this broker created")
        conn = self._ready()
        pipe = conn.client.pipeline(transaction=False)
        pipe.set(worker_key(conn.wid), "1", ex=WORKER_TTL)
        pipe.hset(page_key(outbox.page_id), mapping={"owner": conn.wid, "gen": 0})
        pipe.expire(page_key(outbox.page_id), PAGE_TTL)
        pipe.xadd(out_key(outbox.page_id), {"d": ""}, id="0-1")
        pipe.expire(out_key(outbox.page_id), PAGE_TTL)
        with self._errors(conn):
            pipe.execute()
        self._outboxes[outbox.page_id] = outbox

    def client(self) -> Any:
        """This worker's Redis client (redis-py, ``decode_responses=True``) once
        the worker is alive and subscribed, for services built on the broker
        (presence). Raises :class:`BrokerUnavailable` when Redis is unreachable."""
        return self._ready().client

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Publish once; every worker (this one included) delivers to its members
        through its ``on_broadcast``; blocks for one round trip.

        Returns the number of workers that received it. Every worker gets
        broadcasts in the one order Redis published them, so all pages see
        them in the same order.
        """
        conn = self._ready()
        message = json.dumps({"t": topic, "m": method, "a": args_json})
        with self._errors(conn):
            return int(conn.client.publish(self.broadcast_channel(conn.client), message))

    def broadcast_channel(self, client: Any) -> str:
        """The pub/sub channel of this app's broadcasts, for ``client``'s database."""
        db = client.connection_pool.connection_kwargs.get("db", 0)
        return f"{BROADCAST_CHANNEL}:{db}:{self._namespace}"

    def publish_from_outside(self, topic: str, method: str, args_json: str) -> int:
        """Publish a broadcast with a client of its own, without starting this
        process's broker loops.

        For processes that are not workers (``flask athena broadcast``): the
        workers deliver it as any broadcast. Returns how many received it;
        raises :class:`BrokerUnavailable`.
        """
        client = redis_client(self.url)
        message = json.dumps({"t": topic, "m": method, "a": args_json})
        try:
            return int(client.publish(self.broadcast_channel(client), message))
        except Exception as exc:  # redis-py's errors, imported lazily
            raise BrokerUnavailable(f"Redis failed: {type(exc).__name__}: {exc}") from exc

    def create_presence(self, state: AthenaState) -> PresenceBackend:
        """Presence in Redis with a replica here (:class:`~.redis_presence.RedisPresence`)."""
        from .redis_presence import RedisPresence

        return RedisPresence(state, self)

    # -- worker reports and the operator's checks ------------------------------

    def reports(self, snapshot: Callable[[], Report], interval: float) -> WorkerReports:
        """This worker's reports, written by a loop of their own (started by
        ``ensure_started``, with its own Redis connection)."""
        return ReportWriter(self.url, self._namespace, snapshot, interval)

    def read_reports(self) -> list[Report]:
        """Every worker's latest report, from any process (blocks; raises
        :class:`BrokerUnavailable`)."""
        client = redis_client(self.url)
        try:
            return read_reports(client, report_prefix(client, self._namespace))
        except Exception as exc:  # redis-py's errors, imported lazily
            raise BrokerUnavailable(f"Redis unreachable: {type(exc).__name__}: {exc}") from exc

    def check(self, pings: int) -> BrokerCheck:
        """Round trips, version, workers and reports, from any process (blocks;
        raises :class:`BrokerUnavailable`)."""
        client = redis_client(self.url)
        try:
            return check(client, report_prefix(client, self._namespace), pings)
        except Exception as exc:  # redis-py's errors, imported lazily
            raise BrokerUnavailable(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Stop this worker's loops and join them (bounded); send what is
        queued (the deletes of pages just closed) and drop the liveness key,
        best effort. Blocks the calling greenlet for at most ~15 seconds."""
        for loop in self._loops:
            if not loop.stop(timeout=2.0):
                logger.warning("flask_athena: the %s loop did not stop in time", loop.name)
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            try:
                with gevent.Timeout(5, False):  # silent: the TTLs clean up anyway
                    self._writer.drain()
                    conn.client.delete(worker_key(conn.wid))
            except Exception:  # boundary: shutting down whatever happened
                logger.warning("flask_athena: Redis unreachable at shutdown; keys expire by TTL")
        self._writer.clear()
        self._pid = None
        self._conn = None

    # -- what the page handles use -------------------------------------------

    def check_room(self) -> None:
        """Wait (bounded) while the writer's queue is full; raise BrokerUnavailable
        when it stays full (Redis not keeping up). See ``StreamWriter.check_room``."""
        self._writer.check_room()

    def enqueue(self, item: Write) -> None:
        """Queue one stream write for the writer loop (never blocks)."""
        self._start()
        self._writer.enqueue(item)

    def sync(self, timeout: float) -> None:
        """Block until every stream write this worker queued before the call
        is in Redis (at most ``timeout`` seconds, then BrokerUnavailable)."""
        self._start()
        self._writer.sync(timeout)

    # -- reading streams -----------------------------------------------------

    def read_stream(self, page_id: str, after: int, last: int | None) -> list[bytes] | None:
        """Frames after ``after`` from the page's stream (``None``: cannot replay)."""
        conn = self._ready()
        with self._errors(conn):
            entries = conn.client.xrange(out_key(page_id), min=f"{after + 1}-0")
            if not entries and last is None:
                try:
                    info = conn.client.xinfo_stream(out_key(page_id))
                except conn.errors.ResponseError:
                    return None  # no such stream: the page is gone
                last = entry_seq(info["last-generated-id"])
        if entries:
            if entry_seq(entries[0][0]) != after + 1:
                return None  # trimmed past what this reader has
            return [sse_message(entry_seq(eid), fields["d"]) for eid, fields in entries]
        if last is not None and after > last:
            return None
        return []

    def poll_stream(self, page_id: str, after: int) -> PollAnswer:
        """``(gen, frames)`` of a page another worker owns (see ``RedisReader.poll``).

        Waits for the poller loop, which sends every poll queued meanwhile in
        one pipeline. Raises BrokerUnavailable.
        """
        self._ready()
        return self._poller.poll(page_id, after, POOL_WAIT + 5.0)

    def reader(self, page_id: str) -> RedisReader:
        """A reader of another worker's page, registered for its wake-ups
        before the first read. Raises :class:`BrokerUnavailable`."""
        self._ready()
        return RedisReader(self, page_id)

    def acked(self, page_id: str) -> int:
        """The highest seq the page's browser acknowledged, as its owner recorded it."""
        conn = self._ready()
        with self._errors(conn):
            raw = conn.client.hget(page_key(page_id), "acked")
        return int(raw) if raw is not None else 0

    def trim(self, page_id: str, seq: int) -> None:
        """Forget the page's messages up to ``seq`` (the browser has them)."""
        conn = self._ready()
        with self._errors(conn):
            conn.client.xtrim(out_key(page_id), minid=f"{seq + 1}-0", approximate=False)

    # -- owners --------------------------------------------------------------

    def locate(self, page_id: str) -> str | None:
        """The live owner's worker id, or ``None``: the page is gone.

        A page whose owner stopped beating is deleted here, so its keys never
        outlive the first visit after the owner died.
        """
        conn = self._ready()
        with self._errors(conn):
            owner = conn.client.hget(page_key(page_id), "owner")
            if owner is None:
                return None
            if conn.client.exists(worker_key(owner)):
                return str(owner)
            conn.client.delete(page_key(page_id), out_key(page_id))
        return None

    def alive(self, wid: str) -> bool:
        """Whether worker ``wid`` beats (cached for a second: streams ask often)."""
        alive = self._liveness.cached(wid)
        if alive is None:
            conn = self._ready()
            with self._errors(conn):
                alive = self._liveness.check(conn, wid)
        return alive

    def forward(self, owner: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run ``request`` on worker ``owner``; block this greenlet for its reply.

        Raises :class:`~flask_athena.errors.CallTimeout` (504, the browser
        retries with the same seqs, so nothing runs twice),
        :class:`~flask_athena.errors.PageNotFound` (the owner died) or
        :class:`BrokerUnavailable`.
        """
        conn = self._ready()
        with self._errors(conn):
            return self._forwarder.forward(conn, owner, request, timeout)

    # -- failures reported by the loops --------------------------------------

    def _deliver(self, topic: str, method: str, args_json: str) -> int:
        # In the subscriber's greenlet: hand the broadcast to the topics.
        deliver = self.on_broadcast
        return deliver(topic, method, args_json) if deliver is not None else 0

    def _page_lost(self, page_id: str, what: str) -> None:
        if self.on_lost is not None:
            self.on_lost(page_id, what)

    def _fail_page(self, page_id: str) -> None:
        # In a greenlet of its own: closing a page runs the app's hooks,
        # which must not hold (or kill) the writer.
        gevent.spawn(self._page_lost, page_id, "lost")
