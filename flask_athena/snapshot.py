"""One worker's live view: what the inspector, the CLI and worker reports show.

Pure reads of public state (:class:`~flask_athena.state.AthenaState`,
:class:`~flask_athena.page.LivePage`, :class:`~flask_athena.element.LiveElement`
and the broker's :class:`~flask_athena.broker.Broker` protocol), safe from
any greenlet of the worker; nothing here blocks. The result is JSON.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .element import LiveElement
    from .page import LivePage
    from .state import AthenaState

#: Pages described one by one in a snapshot; past this only counted.
SNAPSHOT_PAGES = 200
#: Topics listed in a snapshot; past this only counted.
SNAPSHOT_TOPICS = 100


def page_ref(page: LivePage | None) -> str | None:
    """A short stable name for ``page`` in logs and views: never its id.

    Page ids are secrets (DESIGN §3); the reference is 12 hex digits of the
    id's SHA-256, enough to follow one page through the logs.
    """
    if page is None:
        return None
    return hashlib.sha256(page.id.encode()).hexdigest()[:12]


def presence_count(state: AthenaState, topic: str) -> int | None:
    """Members tracked in ``topic`` by ``athena.presence`` as this worker sees
    them (``None`` when the table cannot say). Never blocks."""
    try:
        return len(state.presence.list(topic))
    except Exception:  # the inspector must show the rest even if the broker fails
        return None


def worker_snapshot(
    state: AthenaState, started: float, errors: Iterable[dict[str, Any]]
) -> dict[str, Any]:
    """This worker's live view: pages, elements, topics, streams, the broker's
    loops and ``errors`` (the recent ones); ``started`` is the
    :func:`~time.monotonic` time the worker's operations started."""
    pages = list(state.pages.values())
    topics: dict[str, int] = {}
    for page in pages:
        for element in page.elements.values():
            for topic in element.topics:
                topics[topic] = topics.get(topic, 0) + 1
    now = monotonic()
    broker = state.broker
    return {
        "worker": broker.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": time.time(),
        "uptime": round(now - started, 1),
        "broker": broker.kind,
        "page_count": len(pages),
        "pages": [describe_page(page, now) for page in pages[:SNAPSHOT_PAGES]],
        "streams": len(state.streams),
        "local_streams": sum(1 for p in pages if p.stream is not None),
        "topic_count": len(topics),
        "topics": [
            {"topic": topic, "members": count, "presence": presence_count(state, topic)}
            for topic, count in sorted(topics.items())[:SNAPSHOT_TOPICS]
        ],
        "errors": list(errors),
        # The broker's background loops (alive, restarts, items dropped).
        "broker_loops": [
            {
                "name": h.name,
                "alive": h.alive,
                "restarts": h.restarts,
                "failed_items": h.failed_items,
            }
            for h in broker.health()
        ],
    }


def describe_element(element: LiveElement) -> dict[str, Any]:
    """``element`` and its children as the inspector shows them."""
    return {
        "id": element.id,
        "class": type(element).__name__,
        "js_class": element.js_class,
        "topics": sorted(element.topics),
        "children": [describe_element(child) for child in element.children],
    }


def describe_page(page: LivePage, now: float) -> dict[str, Any]:
    """``page`` as the inspector shows it (by :func:`page_ref`, never its id)."""
    # Both brokers' outboxes are sized (messages kept for replay).
    outbox: Any = page.outbox
    outbox_depth = len(outbox) if hasattr(outbox, "__len__") else None
    roots = [e for e in page.elements.values() if e.parent is None]
    return {
        "ref": page_ref(page),
        "connected": page.stream_attached,
        "stream_here": page.stream is not None,
        "idle": None if page.stream_attached else round(now - page.idle_since, 1),
        "elements": len(page.elements),
        "tree": [describe_element(e) for e in roots],
        "pending_calls": page.pending_calls,
        "outbox_depth": outbox_depth,
        "last_seq": page.outbox.last_seq,
    }
