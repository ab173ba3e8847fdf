"""The broker: the one seam between one worker and many.

A broker carries what must be shared when there is more than one worker:
each page's *outbox* (the numbered server → browser messages kept for
replay) and *broadcasts* (a topic's call, carried to every worker). It is
transport only: which elements joined which topic is kept above it, in
:mod:`flask_athena.topics`, which the broker calls back for each broadcast it
carries to this worker. :mod:`.memory` keeps everything in the process and is
the default; :func:`create_broker` picks the broker ``ATHENA_BROKER_URL``
names. Nothing outside this package names a broker class or its service.

A broker that spans workers also offers a :class:`WorkerLink` (its
:attr:`Broker.link`): finding a page's owner, forwarding requests to it,
reading streams of pages other workers own, worker reports and the
operator's checks. The in-process broker has none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .loops import LoopHealth

if TYPE_CHECKING:
    from flask import Response

    from ..config import AthenaConfig
    from ..presence import PresenceBackend
    from ..protocol import JSONValue
    from ..state import AthenaState

#: What a broker calls for each broadcast it carries to this worker:
#: ``(topic, method, args_json) -> elements reached`` (see :mod:`flask_athena.topics`).
Deliver = Callable[[str, str, str], int]
#: Runs a request another worker forwarded, on the page's owner:
#: request dict -> reply dict (``{"status", "body", "cookies"}``, see
#: :mod:`flask_athena.forwarding`).
Handler = Callable[["Forwarded"], "Forwarded"]
#: A request forwarded to a page's owner, or its reply: a JSON object.
Forwarded = dict[str, "JSONValue"]
#: This worker's report (see :meth:`WorkerLink.reports`): a JSON object.
Report = dict[str, Any]

__all__ = [
    "Broker",
    "BrokerCheck",
    "Deliver",
    "Forwarded",
    "Handler",
    "LoopHealth",
    "Outbox",
    "RemotePages",
    "RemoteReader",
    "Report",
    "WorkerLink",
    "WorkerReports",
    "create_broker",
]


class Outbox(Protocol):
    """One page's numbered messages, kept until acknowledged (bounded)."""

    @property
    def last_seq(self) -> int:
        """Sequence number of the last message published (0 before the first)."""

    @property
    def acked(self) -> int:
        """The highest seq acknowledged so far (0 before the first ack): the
        browser has every message up to it, so none of them is needed again."""

    #: Called on publish while more than half the outbox is unacknowledged
    #: (the page checks whether its stream keeps up; see flask_athena.stream).
    on_backlog: Callable[[], None] | None

    def publish(self, data: str, field: bytes | None = None) -> int:
        """Append one message (a single-line JSON string); return its seq.

        ``field``: ``protocol.sse_data(data)`` when the caller built it
        already, for a ``data`` that is valid text (``protocol.valid_text``):
        a broadcast builds both once per widget id, not once per element.
        """

    def ack(self, seq: int) -> None:
        """The browser has every message up to ``seq``; forget them."""

    def read(self, after: int) -> list[bytes] | None:
        """SSE frames of the messages after ``after``.

        ``None`` when they cannot all be given (trimmed past ``after``, or
        ``after`` is ahead of what was ever published): replay is impossible.
        """

    def wait(self, after: int, timeout: float) -> bool:
        """Block the calling greenlet until a message after ``after`` exists,
        the outbox closes, or ``timeout`` passes; ``True`` unless timed out."""

    def wake(self) -> None:
        """Wake every waiter now (a newer stream replaced an older one)."""

    def close(self) -> None:
        """Wake every waiter; later reads return ``None``."""

    def served_by(self, worker: str | None) -> None:
        """Which worker serves the page's event stream: ``None`` for this one.

        Only a broker where another worker may serve it needs to know (to
        wake that worker); the in-process broker ignores it.
        """


class RemotePages(Protocol):
    """Serves the endpoints of pages another worker owns (set up on
    ``AthenaState.remote`` when the broker has a :class:`WorkerLink`).

    The views call these for a page id this worker does not hold; each
    blocks the request's greenlet as the local view would.
    """

    def calls(self, page_id: str) -> Response:
        """Answer a calls POST (checked here as far as possible, then by the owner)."""

    def close(self, page_id: str) -> Response:
        """Answer a close POST (``204`` when the page is gone already)."""

    def events(self, page_id: str, last: int, retry_ms: int, ack: bool = True) -> Response:
        """The page's event stream after ``last``, or a ``gone`` answer.

        ``ack``: ``last`` acknowledges the messages up to it (a page's own
        Last-Event-ID does). ``False`` for a shared stream, whose ``last`` is
        what its leader tab relayed, not what the page's tab has: nothing is
        forgotten, and a ``last`` below the page's acknowledged seq starts
        from that seq (see :mod:`flask_athena.shared_stream`).
        """


class RemoteReader(Protocol):
    """Reads the outbox of a page another worker owns, for one event stream."""

    #: The page whose outbox is read.
    page_id: str

    def wait(self, timeout: float) -> bool:
        """Block the calling greenlet until the owner says the page has news,
        or ``timeout`` passes; ``True`` when woken."""

    def poll(self, after: int) -> tuple[int | None, list[bytes] | None]:
        """``(gen, frames)``: the page's stream generation (``None`` when the
        page is gone) and the frames after ``after`` (``None``: trimmed).
        Blocks for a round trip; raises :class:`~flask_athena.errors.BrokerUnavailable`."""

    def close(self) -> None:
        """Stop listening for the owner's wake-ups (never blocks)."""


class WorkerReports(Protocol):
    """This worker's reports to the others (what the inspector shows of every worker)."""

    def ensure_started(self) -> None:
        """Start writing reports in this process (once per process; never blocks)."""

    def read_all(self) -> list[Report]:
        """Every worker's latest report (``[]`` when the broker is unreachable: logged).
        Blocks for a round trip."""

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop writing (joined within ``timeout`` seconds; ``False`` if not)
        and remove this worker's report (best effort, bounded)."""


@dataclass
class BrokerCheck:
    """What ``flask athena check`` prints about a broker spanning workers."""

    #: The service and its version (``"Redis 7.0.15"``).
    server: str
    #: Round trips measured, in milliseconds.
    latencies_ms: list[float] = field(default_factory=list)
    #: Live workers of any app sharing the service.
    live_workers: int = 0
    #: Workers of this app that wrote a report lately.
    reporting: int = 0


class WorkerLink(Protocol):
    """What a broker spanning workers offers about pages other workers own.

    The views' remote half (:mod:`flask_athena.forwarding`), the inspector
    and the CLI use it; every method that talks to the service blocks the
    calling greenlet for a round trip and raises
    :class:`~flask_athena.errors.BrokerUnavailable` when it cannot.
    """

    @property
    def worker_id(self) -> str:
        """This worker's id (connects on first use)."""

    #: Runs requests other workers forward to this one (pages it owns).
    handler: Handler | None

    def locate(self, page_id: str) -> str | None:
        """The live owner's worker id, or ``None``: the page is gone."""

    def alive(self, wid: str) -> bool:
        """Whether worker ``wid`` lives (cached briefly)."""

    def forward(self, owner: str, request: Forwarded, timeout: float) -> Forwarded:
        """Run ``request`` on worker ``owner``; block this greenlet for its reply."""

    def reader(self, page_id: str) -> RemoteReader:
        """A reader of the page's outbox, woken by its owner."""

    def read_stream(self, page_id: str, after: int, last: int | None) -> list[bytes] | None:
        """Frames after ``after`` from the page's outbox (``None``: cannot replay).

        ``last``: the page's newest seq when known (the owner's attach
        answer), so an ``after`` beyond it is refused without asking."""

    def sync(self, timeout: float) -> None:
        """Block until every outbox write this worker queued before the call is
        readable by other workers (at most ``timeout`` seconds, then
        :class:`~flask_athena.errors.BrokerUnavailable`)."""

    def trim(self, page_id: str, seq: int) -> None:
        """Forget the page's messages up to ``seq`` (the browser has them)."""

    def acked(self, page_id: str) -> int:
        """The highest seq the page's browser acknowledged, as its owner recorded it."""

    def reports(self, snapshot: Callable[[], Report], interval: float) -> WorkerReports:
        """Reports of this worker, ``snapshot()`` written every ``interval`` seconds."""

    def read_reports(self) -> list[Report]:
        """Every worker's latest report, from any process (a CLI command);
        raises :class:`~flask_athena.errors.BrokerUnavailable`."""

    def check(self, pings: int) -> BrokerCheck:
        """Measure ``pings`` round trips and count workers (from any process);
        raises :class:`~flask_athena.errors.BrokerUnavailable`."""

    def publish_from_outside(self, topic: str, method: str, args_json: str) -> int:
        """Broadcast from a process that is not a worker (a CLI command),
        without starting this process's loops; returns how many workers got it."""


class Broker(Protocol):
    """Creates outboxes, records pages, carries broadcasts; one per app per worker."""

    #: ``"memory"`` or ``"redis"``: what the inspector and the CLI show.
    kind: str
    #: Called by a broker with each broadcast it carries to this worker (set
    #: by :class:`~flask_athena.topics.Topics`).
    on_broadcast: Deliver | None
    #: Called with ``(page_id, what)`` when an owned page lost its shared
    #: state (``"lost"``: close it) or the worker serving its stream died
    #: (``"reader"``: detach it). Never called by the in-process broker.
    on_lost: Callable[[str, str], None] | None

    @property
    def worker_id(self) -> str:
        """This worker's id (``"local"`` for the in-process broker)."""

    @property
    def link(self) -> WorkerLink | None:
        """The link to other workers' pages, or ``None``: every page lives here."""

    def create_outbox(self, page_id: str, size: int) -> Outbox:
        """A new outbox of at most ``size`` messages for page ``page_id`` (never blocks)."""

    def register_page(self, page_id: str, outbox: Outbox) -> None:
        """Record that this worker owns page ``page_id`` (blocks for the broker's
        round trip, if any), before the page's URLs are handed out: other
        workers must find the owner before the browser asks them."""

    def broadcast(self, topic: str, method: str, args_json: str) -> int:
        """Carry one broadcast to every worker (this one included), which
        delivers it through :attr:`on_broadcast`. Returns the elements reached
        (in-process) or the workers reached (spanning workers)."""

    def create_presence(self, state: AthenaState) -> PresenceBackend:
        """The presence table that goes with this broker (one per app per worker)."""

    def health(self) -> list[LoopHealth]:
        """The state of the broker's background loops (never blocks, never connects)."""

    def close(self) -> None:
        """Stop the broker's loops and join them (bounded)."""


def create_broker(config: AthenaConfig, app: Any) -> Broker:
    """The broker ``ATHENA_BROKER_URL`` names for ``app`` (nothing connects yet).

    ``None``: the in-process :class:`~.memory.MemoryBroker`; a ``redis://``
    URL: the Redis broker (``redis`` is imported only then).
    """
    if config.broker_url is None:
        from .memory import MemoryBroker

        return MemoryBroker(config.outbox_bytes)
    from .redis import RedisBroker

    broker = RedisBroker(
        config.broker_url,
        config.call_timeout,
        f"{app.import_name}{config.url_prefix}",
        outbox_bytes=config.outbox_bytes,
    )
    broker.app = app
    return broker
