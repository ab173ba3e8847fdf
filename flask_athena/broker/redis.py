"""The Redis broker: any number of workers and hosts sharing one Redis.

Chosen by ``ATHENA_BROKER_URL = "redis://..."``; ``docs/scale-out.rst`` is the
design. In short, with every key under ``athena:``:

- ``athena:page:<page>`` (hash ``owner``, ``gen``): which worker owns the page;
  ``athena:out:<page>`` (stream): the page's outbox, entry id ``<seq>-0``,
  trimmed to ``ATHENA_OUTBOX_SIZE`` and on ack. The owner refreshes both TTLs
  while the page lives and deletes both when it closes.
- ``athena:worker:<wid>``: the worker's liveness key (a short TTL, refreshed
  every second). A page whose owner's key is gone is gone.
- ``athena:inbox:<wid>`` (list): requests forwarded to the worker that owns
  their page. Replies, stream wake-ups and broadcasts travel by pub/sub: each
  worker holds ONE subscriber connection (``athena:bc`` for broadcasts and its
  own ``athena:w:<wid>``), never one per open stream.

Only the owner writes a page's stream, through one writer greenlet per worker
that sends queued messages in order, in pipelined batches. ``redis`` is
imported here only, so it stays an optional dependency.

Every Redis failure seen by a caller is :class:`~flask_athena.errors.BrokerUnavailable`
(503); the background greenlets reconnect with backoff, jitter and a cap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from gevent.pool import Pool

from .. import signals
from ..errors import BrokerUnavailable, CallTimeout, PageNotFound
from ..protocol import sse_message
from .loops import Loop, LoopHealth, backoff
from .memory import LocalTopics
from .redis_outbox import (
    BROADCAST_CHANNEL,
    INBOX_TTL,
    MAX_FORWARDED,
    MAX_QUEUED,
    MAX_REDIS_CONNECTIONS,
    PAGE_REFRESH,
    PAGE_TTL,
    POOL_WAIT,
    WORKER_BEAT,
    WORKER_TTL,
    RedisOutbox,
    RedisReader,
    entry_seq,
    inbox_key,
    out_key,
    page_key,
    wake_channel,
    worker_key,
)

logger = logging.getLogger("flask_athena")
#: Runs a forwarded request on the owner: request dict -> reply dict.
Handler = Callable[[dict[str, Any]], dict[str, Any]]
#: Seconds an idle loop sleeps before it looks at its queue again (every
#: wait has a timeout: a lost wake-up costs at most this long).
IDLE_WAIT = 1.0
#: One queued stream write: (op, outbox, seq, data).
Write = tuple[str, RedisOutbox, int, str]


class RedisBroker:
    """Outboxes in Redis streams, broadcasts over pub/sub, requests forwarded to owners.

    One per app per worker process. Nothing connects before first use, and
    the worker id is made per process, so the object survives gunicorn's fork.
    """

    def __init__(self, url: str, call_timeout: float, namespace: str = "") -> None:
        if importlib.util.find_spec("redis") is None:  # pragma: no cover - the install
            raise RuntimeError(
                "ATHENA_BROKER_URL needs the redis package: pip install 'flask_athena[redis]'"
            )
        # Imported in the worker on first use, after gevent patched the
        # standard library (gunicorn --preload imports the app before that).
        self._redis_mod: Any = None
        self.url = url
        #: Pub/sub channels ignore Redis database numbers: broadcasts of
        #: different apps (or databases) must not meet on one channel.
        self._namespace = namespace
        self._broadcast_channel = BROADCAST_CHANNEL
        self.call_timeout = call_timeout
        #: Runs forwarded requests; set by the app state.
        self.handler: Handler | None = None
        #: Called with ``(page_id, what)`` when an owned page lost its keys
        #: (``"lost"``) or its remote stream's worker died (``"reader"``).
        self.on_lost: Callable[[str, str], None] | None = None
        #: The Flask app: the sender of the broker's signals (set by the app state).
        self.app: Any = None
        self._topics = LocalTopics()
        self._outboxes: dict[str, RedisOutbox] = {}
        self._readers: dict[str, set[Event]] = {}
        self._replies: dict[str, AsyncResult] = {}
        self._alive: dict[str, tuple[float, bool]] = {}
        self._queue: deque[tuple[str, RedisOutbox, int, str]] = deque()
        self._queued = Event()
        #: Polls of streams served here for other workers' pages, sent together.
        self._polls: deque[tuple[str, int, AsyncResult]] = deque()
        self._polls_queued = Event()
        self._pid: int | None = None
        self._wid = ""
        self._client: Any = None
        self._loops: list[Loop] = []
        self._subscribed = Event()
        self._pool = Pool(MAX_FORWARDED)

    # -- process start -------------------------------------------------------

    @property
    def worker_id(self) -> str:
        self._start()
        return self._wid

    def _start(self) -> Any:
        """Connect and start this process's greenlets on first use; return the client."""
        if self._pid == os.getpid():
            return self._client
        import redis

        self._redis_mod = redis
        self._pid = os.getpid()
        self._wid = uuid.uuid4().hex
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
        self._client = redis.Redis(connection_pool=pool)
        self._broadcast_channel = self.broadcast_channel(self._client)
        self._subscribed.clear()
        # Nothing of another process (before a fork) is ours.
        self._queue.clear()
        self._polls.clear()
        self._outboxes.clear()
        self._pool = Pool(MAX_FORWARDED)
        # New loops per process: a loop of the parent (before a fork) is not ours.
        self._loops = [
            Loop("heartbeat", self._beat_forever),
            Loop("subscriber", self._listen_forever),
            Loop("inbox", self._serve_inbox_forever),
            Loop("writer", self._write_forever),
            Loop("poller", self._poll_forever),
        ]
        for loop in self._loops:
            loop.start()
        return self._client

    def health(self) -> list[LoopHealth]:
        """The state of this worker's background loops (empty before first use).

        Each reports whether it runs, how often it died and was restarted,
        and how many items it refused; a metrics exporter or a health check
        reads this from any greenlet.
        """
        return [loop.health for loop in self._loops]

    def _loop(self, name: str) -> Loop:
        return next(loop for loop in self._loops if loop.name == name)

    def _ready(self) -> Any:
        """The client, once this worker is alive and subscribed; else BrokerUnavailable."""
        client = self._start()
        if not self._subscribed.wait(3.0):
            error = BrokerUnavailable("Redis is unreachable (ATHENA_BROKER_URL).")
            signals.broker_error.send(self.app, operation="connect", error=error)
            raise error
        return client

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except self._redis_mod.exceptions.RedisError as exc:
            signals.broker_error.send(self.app, operation="request", error=exc)
            raise BrokerUnavailable(f"Redis failed: {type(exc).__name__}") from exc

    # -- the Broker protocol -------------------------------------------------

    def create_outbox(self, page_id: str, size: int) -> RedisOutbox:
        outbox = RedisOutbox(self, page_id, size)
        return outbox

    def register_page(self, outbox: RedisOutbox) -> None:
        """Record a new page as owned by this worker (blocks for one round trip).

        The stream is created here with a placeholder entry ``0-1`` so readers
        can tell "nothing yet" from "no such page".
        """
        client = self._ready()
        pipe = client.pipeline(transaction=False)
        pipe.hset(page_key(outbox.page_id), mapping={"owner": self._wid, "gen": 0})
        pipe.expire(page_key(outbox.page_id), PAGE_TTL)
        pipe.xadd(out_key(outbox.page_id), {"d": ""}, id="0-1")
        pipe.expire(out_key(outbox.page_id), PAGE_TTL)
        with self._errors():
            pipe.execute()
        self._outboxes[outbox.page_id] = outbox

    def subscribe(self, topic: str, element: Any) -> None:
        self._topics.subscribe(topic, element)

    def unsubscribe(self, topic: str, element: Any) -> None:
        self._topics.unsubscribe(topic, element)

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Publish once; every worker (this one included) delivers to its members.

        Returns the number of workers that received it. Every worker gets
        broadcasts in the one order Redis published them, so all pages see
        them in the same order.
        """
        client = self._ready()
        message = json.dumps({"t": topic, "m": method, "a": args_json})
        with self._errors():
            return int(client.publish(self._broadcast_channel, message))

    def broadcast_channel(self, client: Any) -> str:
        """The pub/sub channel of this app's broadcasts, for ``client``'s database."""
        db = client.connection_pool.connection_kwargs.get("db", 0)
        return f"{BROADCAST_CHANNEL}:{db}:{self._namespace}"

    def publish_broadcast(self, client: Any, topic: str, method: str, args_json: str) -> int:
        """Publish a broadcast through ``client`` (a ``redis.Redis`` on this URL)
        without starting this process's broker greenlets.

        For processes that are not workers (``flask athena broadcast``): the
        workers deliver it as any broadcast. Returns how many received it.
        """
        message = json.dumps({"t": topic, "m": method, "a": args_json})
        return int(client.publish(self.broadcast_channel(client), message))

    def close(self) -> None:
        """Stop this worker's loops and join them (bounded); send what is
        queued (the deletes of pages just closed) and drop the liveness key,
        best effort. Blocks the calling greenlet for at most ~10 seconds."""
        for loop in self._loops:
            if not loop.stop(timeout=2.0):
                logger.warning("flask_athena: the %s loop did not stop in time", loop.name)
        self._loops = []
        self._topics.clear()
        if self._client is not None and self._pid == os.getpid():
            try:
                with gevent.Timeout(5, False):  # silent: the TTLs clean up anyway
                    while self._queue:
                        self._write(self._take_batch())
                    self._client.delete(worker_key(self._wid))
            except Exception:  # boundary: shutting down whatever happened
                logger.warning("flask_athena: Redis unreachable at shutdown; keys expire by TTL")
        self._queue.clear()
        self._pid = None

    # -- reading streams -----------------------------------------------------

    def read_stream(self, page_id: str, after: int, last: int | None) -> list[bytes] | None:
        """Frames after ``after`` from the page's stream (``None``: cannot replay)."""
        client = self._ready()
        with self._errors():
            entries = client.xrange(out_key(page_id), min=f"{after + 1}-0")
            if not entries and last is None:
                try:
                    info = client.xinfo_stream(out_key(page_id))
                except self._redis_mod.exceptions.ResponseError:
                    return None  # no such stream: the page is gone
                last = entry_seq(info["last-generated-id"])
        if entries:
            if entry_seq(entries[0][0]) != after + 1:
                return None  # trimmed past what this reader has
            return [sse_message(entry_seq(eid), fields["d"]) for eid, fields in entries]
        if last is not None and after > last:
            return None
        return []

    def poll_stream(self, page_id: str, after: int) -> tuple[int | None, list[bytes] | None]:
        """``(gen, frames)`` of a page another worker owns (see ``RedisReader.poll``).

        Polls wait for the poller greenlet, which sends every poll queued
        meanwhile in one pipeline: a broadcast that wakes thousands of such
        streams costs a few round trips on one connection, not a pool
        checkout each.
        """
        self._ready()
        result: AsyncResult = AsyncResult()
        self._polls.append((page_id, after, result))
        self._polls_queued.set()
        if not result.wait(POOL_WAIT + 5.0):
            raise BrokerUnavailable("Redis did not answer in time.")
        answer: tuple[int | None, list[bytes] | None] = result.get(block=False)
        return answer

    def _poll_forever(self) -> None:
        while True:
            if not self._polls:
                self._polls_queued.clear()
                self._polls_queued.wait(IDLE_WAIT)
                continue
            batch = [self._polls.popleft() for _ in range(min(len(self._polls), 1000))]
            try:
                self._poll(batch)
            except self._redis_mod.exceptions.ConnectionError as exc:
                signals.broker_error.send(self.app, operation="poll", error=exc)
                error = BrokerUnavailable(f"Redis failed: {type(exc).__name__}")
                for _, _, result in batch:
                    result.set_exception(error)
            except Exception:  # one poll is bad: find it, fail it alone
                for item in batch:
                    try:
                        self._poll([item])
                    except Exception as exc:  # boundary: the poller serves everyone
                        self._loop("poller").item_failed("a stream poll", exc)
                        item[2].set_exception(
                            BrokerUnavailable(f"Redis failed: {type(exc).__name__}")
                        )

    def _poll(self, batch: list[tuple[str, int, AsyncResult]]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for page_id, after, _ in batch:
            pipe.hget(page_key(page_id), "gen")
            pipe.xrange(out_key(page_id), min=f"{after + 1}-0")
        replies = pipe.execute()
        answers = [
            _poll_answer(replies[2 * i], replies[2 * i + 1], after)
            for i, (_, after, _) in enumerate(batch)
        ]
        for (_, _, result), answer in zip(batch, answers):
            result.set(answer)

    def reader(self, page_id: str) -> RedisReader:
        self._ready()
        return RedisReader(self, page_id)

    def trim(self, page_id: str, seq: int) -> None:
        """Forget the page's messages up to ``seq`` (the browser has them)."""
        client = self._ready()
        with self._errors():
            client.xtrim(out_key(page_id), minid=f"{seq + 1}-0", approximate=False)

    # -- owners --------------------------------------------------------------

    def locate(self, page_id: str) -> str | None:
        """The live owner's worker id, or ``None``: the page is gone.

        A page whose owner stopped beating is deleted here, so its keys never
        outlive the first visit after the owner died.
        """
        client = self._ready()
        with self._errors():
            owner = client.hget(page_key(page_id), "owner")
            if owner is None:
                return None
            if client.exists(worker_key(owner)):
                return str(owner)
            client.delete(page_key(page_id), out_key(page_id))
        return None

    def alive(self, wid: str) -> bool:
        """Whether worker ``wid`` beats (cached for a second: streams ask often)."""
        now = monotonic()
        cached = self._alive.get(wid)
        if cached is not None and now - cached[0] < WORKER_BEAT:
            return cached[1]
        client = self._ready()
        with self._errors():
            alive = bool(client.exists(worker_key(wid)))
        if len(self._alive) > 10_000:
            self._alive.clear()
        self._alive[wid] = (now, alive)
        return alive

    def forward(self, owner: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Run ``request`` on worker ``owner``; block this greenlet for its reply.

        Raises :class:`CallTimeout` (504, the browser retries with the same
        seqs, so nothing runs twice) or :class:`BrokerUnavailable`.
        """
        client = self._ready()
        rid = uuid.uuid4().hex
        result: AsyncResult = AsyncResult()
        self._replies[rid] = result
        try:
            payload = json.dumps({"id": rid, "from": self._wid, "req": request})
            pipe = client.pipeline(transaction=False)
            pipe.rpush(inbox_key(owner), payload)
            pipe.expire(inbox_key(owner), INBOX_TTL)
            with self._errors():
                pipe.execute()
            deadline = monotonic() + timeout
            # Wait in slices: if the owner dies meanwhile, say so promptly
            # instead of holding the browser until the timeout.
            while True:
                result.wait(min(WORKER_BEAT, max(deadline - monotonic(), 0)))
                if result.ready():
                    break
                if monotonic() >= deadline:
                    raise CallTimeout("The worker that owns this page did not answer in time.")
                if not self.alive(owner):
                    raise PageNotFound("The worker that owned this page is gone.")
        finally:
            self._replies.pop(rid, None)
        reply: dict[str, Any] = result.get(block=False)
        return reply

    # -- background greenlets ------------------------------------------------

    def _check_room(self) -> None:
        """Raise BrokerUnavailable when Redis is not keeping up with new messages."""
        if len(self._queue) >= MAX_QUEUED:
            raise BrokerUnavailable("Redis is not keeping up; message not sent.")

    def _enqueue(self, item: Write) -> None:
        # Only new messages are refused when Redis stalls (see _check_room,
        # which RedisOutbox.publish calls first): closes, trims and
        # generation bumps always queue, so closing a page never fails.
        self._start()
        self._queue.append(item)
        self._queued.set()

    def _write_forever(self) -> None:
        """Send queued stream writes in order, pipelined; retry through outages.

        A batch that fails for another reason than the connection holds a bad
        write: the batch is sent again one write at a time, and the write that
        fails alone is dropped and its page closed (the browser gets ``gone``:
        an explicit failure, never a gap in the page's stream).
        """
        while True:
            if not self._queue:
                self._queued.clear()
                self._queued.wait(IDLE_WAIT)
                continue
            batch = self._take_batch()
            try:
                self._write(batch)
            except Exception:  # not the connection: one write is bad
                for item in batch:
                    try:
                        self._write([item])
                    except Exception as exc:  # boundary: the writer serves everyone
                        self._loop("writer").item_failed(f"a write ({item[0]}) of a page", exc)
                        self._fail_page(item[1].page_id)

    def _write(self, batch: list[Write]) -> None:
        """Send ``batch``, retrying through connection failures with backoff."""
        tries = 0
        while True:
            try:
                self._flush(batch)
                return
            except (
                self._redis_mod.exceptions.ConnectionError,
                self._redis_mod.exceptions.TimeoutError,
            ) as exc:
                tries += 1
                logger.warning("flask_athena: Redis write failed (%s); retrying", exc)
                signals.broker_error.send(self.app, operation="write", error=exc)
                gevent.sleep(backoff(tries))
                # Replaying a batch is safe: an XADD of an id already
                # stored fails alone (raise_on_error=False) and trims
                # and deletes are idempotent.

    def _fail_page(self, page_id: str) -> None:
        # In a greenlet of its own: closing a page runs the app's hooks,
        # which must not hold (or kill) the writer.
        if self.on_lost is not None:
            gevent.spawn(self.on_lost, page_id, "lost")

    def _take_batch(self) -> list[Write]:
        return [self._queue.popleft() for _ in range(min(len(self._queue), 1000))]

    def _flush(self, batch: list[Write]) -> None:
        pipe = self._client.pipeline(transaction=False)
        woken: dict[str, RedisOutbox] = {}
        for op, outbox, seq, data in batch:
            pid = outbox.page_id
            if op == "xadd":
                pipe.xadd(
                    out_key(pid),
                    {"d": data},
                    id=f"{seq}-0",
                    maxlen=outbox.size,
                    approximate=False,
                    nomkstream=True,  # never recreate a deleted (closed) page
                )
                woken[pid] = outbox
            elif op == "ack":
                pipe.xtrim(out_key(pid), minid=f"{seq + 1}-0", approximate=False)
            elif op == "gen":
                pipe.hincrby(page_key(pid), "gen", 1)
                pipe.expire(page_key(pid), PAGE_TTL)  # never a key without a TTL
                if data:
                    pipe.publish(wake_channel(data), json.dumps({"k": "wake", "p": pid}))
                woken[pid] = outbox
            else:  # close
                pipe.delete(page_key(pid), out_key(pid))
                woken[pid] = outbox
                if self._outboxes.get(pid) is outbox:
                    del self._outboxes[pid]
        for pid, outbox in woken.items():
            if outbox.reader is not None:
                pipe.publish(wake_channel(outbox.reader), json.dumps({"k": "wake", "p": pid}))
        pipe.execute(raise_on_error=False)

    def _beat_forever(self) -> None:
        """Keep this worker's liveness key and its pages' TTLs fresh."""
        tries = 0
        last_pages = 0.0
        while True:
            try:
                self._client.set(worker_key(self._wid), "1", ex=WORKER_TTL)
                tries = 0
                now = monotonic()
                if now - last_pages >= PAGE_REFRESH:
                    last_pages = now
                    self._refresh_pages()
                gevent.sleep(WORKER_BEAT)
            except self._redis_mod.exceptions.RedisError as exc:
                tries += 1
                logger.warning("flask_athena: Redis heartbeat failed (%s)", exc)
                signals.broker_error.send(self.app, operation="heartbeat", error=exc)
                gevent.sleep(backoff(tries))
            except Exception as exc:  # boundary: a hook raised in on_lost; keep beating
                self._loop("heartbeat").item_failed("a page refresh", exc)
                gevent.sleep(WORKER_BEAT)

    def _refresh_pages(self) -> None:
        outboxes = [o for o in self._outboxes.values() if not o.closed]
        if not outboxes:
            return
        pipe = self._client.pipeline(transaction=False)
        readers = [o for o in outboxes if o.reader is not None]
        for outbox in outboxes:
            pipe.expire(page_key(outbox.page_id), PAGE_TTL)
            pipe.expire(out_key(outbox.page_id), PAGE_TTL)
        for outbox in readers:
            pipe.exists(worker_key(outbox.reader or ""))
        results = pipe.execute()
        lost = [o for i, o in enumerate(outboxes) if not results[2 * i]]
        dead = [o for i, o in enumerate(readers) if not results[2 * len(outboxes) + i]]
        for outbox in dead:
            outbox.reader = None
            if self.on_lost is not None:
                self.on_lost(outbox.page_id, "reader")
        for outbox in lost:
            # Our keys expired (Redis was unreachable longer than their TTL,
            # and another worker declared us dead): the page cannot be
            # reached any more, so close it rather than leak it.
            if not outbox.closed and self.on_lost is not None:
                self.on_lost(outbox.page_id, "lost")

    def _listen_forever(self) -> None:
        """The worker's one pub/sub connection: broadcasts, wake-ups, replies."""
        tries = 0
        channels = (self._broadcast_channel, wake_channel(self._wid))
        while True:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(*channels)
                confirmed = 0
                while confirmed < len(channels):
                    message = pubsub.get_message(timeout=2.0)
                    if message is None:
                        raise self._redis_mod.exceptions.TimeoutError("no SUBSCRIBE reply")
                    if message["type"] == "subscribe":
                        confirmed += 1
                # Our liveness key first, so no page is created by a worker
                # other workers would already call dead.
                self._client.set(worker_key(self._wid), "1", ex=WORKER_TTL)
                self._subscribed.set()
                if tries:
                    signals.broker_reconnected.send(self.app)
                tries = 0
                # Wakes may have been missed while disconnected.
                for events in list(self._readers.values()):
                    for event in events:
                        event.set()
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
            except Exception as exc:  # the connection, or a reply redis-py cannot decode
                # Either way the connection is in doubt: reconnect (wake-ups
                # missed meanwhile are made up for once subscribed again).
                self._subscribed.clear()
                tries += 1
                logger.warning("flask_athena: Redis subscriber lost (%r); reconnecting", exc)
                signals.broker_error.send(self.app, operation="subscribe", error=exc)
                gevent.sleep(backoff(tries))
            finally:
                try:
                    pubsub.close()
                except Exception:  # closing a broken connection
                    pass

    def _dispatch(self, channel: str, data: str) -> None:
        try:
            message = json.loads(data)
            if channel == self._broadcast_channel:
                self._deliver(message["t"], message["m"], message["a"])
            elif message.get("k") == "wake":
                for event in self._readers.get(message["p"], ()):
                    event.set()
            elif message.get("k") == "reply":
                result = self._replies.get(message["r"])
                if result is not None and not result.ready():
                    result.set(message["v"])
        except Exception as exc:  # boundary: one bad message must not end the subscriber
            self._loop("subscriber").item_failed("a pub/sub message", exc)

    def _deliver(self, topic: str, method: str, args_json: str) -> None:
        self._topics.deliver(topic, method, args_json)

    def _serve_inbox_forever(self) -> None:
        """Take requests forwarded to this worker; run each in its own greenlet."""
        tries = 0
        while not self._subscribed.wait(IDLE_WAIT):
            pass
        while True:
            try:
                item = self._client.blpop([inbox_key(self._wid)], timeout=1)
                tries = 0
            except self._redis_mod.exceptions.ConnectionError as exc:
                tries += 1
                logger.warning("flask_athena: Redis inbox failed (%s)", exc)
                signals.broker_error.send(self.app, operation="inbox", error=exc)
                gevent.sleep(backoff(tries))
                continue
            except Exception as exc:  # boundary: an entry redis-py cannot decode
                # The entry is popped already; its sender times out (504).
                self._loop("inbox").item_failed("a forwarded request", exc)
                continue
            if item is not None:
                # The pool bounds the requests run at once; spawn blocks
                # while it is full, and the rest wait in the inbox list.
                self._pool.spawn(self._serve, item[1])

    def _serve(self, payload: str) -> None:
        """Run one forwarded request and publish its reply (a pool greenlet)."""
        try:
            message = json.loads(payload)
            sender, rid, req = message["from"], message["id"], message["req"]
        except Exception as exc:  # boundary: nobody to answer, the sender times out
            self._loop("inbox").item_failed("an unreadable forwarded request", exc)
            return
        handler = self.handler
        try:
            if handler is None:
                reply: dict[str, Any] = {"status": 503, "headers": [], "body": ""}
            else:
                reply = handler(req)
        except Exception as exc:  # boundary: one request must not end the inbox
            self._loop("inbox").item_failed("a forwarded request", exc)
            # The sender learns at once instead of waiting for its timeout.
            reply = {"status": 500, "headers": [], "body": ""}
        try:
            self._client.publish(
                wake_channel(sender), json.dumps({"k": "reply", "r": rid, "v": reply})
            )
        except Exception as exc:  # boundary: the sender times out (504) and retries
            self._loop("inbox").item_failed("the reply of a forwarded request", exc)


def _poll_answer(
    gen: str | None, entries: list[tuple[str, dict[str, str]]], after: int
) -> tuple[int | None, list[bytes] | None]:
    if gen is None:
        return None, None  # the page is gone
    if entries and entry_seq(entries[0][0]) != after + 1:
        return int(gen), None  # trimmed past ``after``
    return int(gen), [sse_message(entry_seq(eid), fields["d"]) for eid, fields in entries]
