"""The cost of one join in a room of 1,000 members, before and after presence.

In process, on the in-memory broker, no sockets (a micro-benchmark, not part
of ``python -m bench``)::

    python -m bench.presence_join            # 1,000 members, 50 joins measured
    python -m bench.presence_join --members 200 --joins 20

*before* is the example chat as it was: a ``ChatRoom`` object kept the
names, and every join broadcast an announcement and the **whole** sorted
name list to every member. *hook* is presence with a ``presence_changed``
hook that passes the diff on with ``call_remote`` (one call per member,
each answered by its browser). *relay* is the chat today: presence with
``presence_relay``, the diff relayed like a broadcast, serialized once. In
both, every member gets one small diff and the newcomer one snapshot. For each join it
counts the bytes of the SSE frames the join put in the members' outboxes
(what the server sends) and the server CPU time the join took
(``time.process_time``), then the newcomer leaves again, so every join
finds the same room. Figures are medians; ``bench/README.md`` records them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from flask import Flask

from flask_athena import Athena, LiveElement
from flask_athena.page import LivePage
from flask_athena.state import AthenaState

TOPIC = "room:lobby"


class Room:
    """The example chat's ``ChatRoom`` before presence (the baseline)."""

    def __init__(self, athena: Athena) -> None:
        self.athena = athena
        self.members: dict[LiveElement, str] = {}

    def names(self) -> list[str]:
        return sorted(set(self.members.values()), key=str.lower)

    def enter(self, box: LiveElement, name: str) -> None:
        self.members[box] = name
        box.join(TOPIC)
        self.athena.broadcast(TOPIC, "announce", f"{name} joined the room")
        self.athena.broadcast(TOPIC, "presence", self.names())

    def leave(self, box: LiveElement) -> None:
        name = self.members.pop(box, None)
        if name is not None:
            box.leave(TOPIC)
            self.athena.broadcast(TOPIC, "announce", f"{name} left the room")
            self.athena.broadcast(TOPIC, "presence", self.names())


class BeforeBox(LiveElement):
    js_class = "ChatThing.ChatterBox"

    def __init__(self, room: Room) -> None:
        super().__init__()
        self.room = room

    def enter(self, name: str) -> None:
        self.room.enter(self, name)

    def exit(self) -> None:
        self.room.leave(self)


class HookBox(LiveElement):
    """Presence, the diff passed on by a hook with ``call_remote`` (a call
    each member's browser answers)."""

    js_class = "ChatThing.ChatterBox"

    def __init__(self, athena: Athena) -> None:
        super().__init__()
        self.athena = athena

    def enter(self, name: str) -> None:
        self.join(TOPIC)
        self.athena.presence.track(self, TOPIC, name, {"since": int(time.time())})
        self.call_remote("presence_state", self.athena.presence.list(TOPIC))

    def exit(self) -> None:
        self.athena.presence.untrack(self, TOPIC)

    def presence_changed(self, topic: str, joins: Any, leaves: Any) -> None:
        self.call_remote("presence_diff", joins, leaves)


class RelayBox(HookBox):
    """What ``example_app.chat.ChatterBox`` does: the diff relayed as a
    notification, serialized once per worker."""

    presence_relay = "presence_diff"

    def presence_changed(self, topic: str, joins: Any, leaves: Any) -> None:
        pass


def measure(make: Callable[[Athena], LiveElement], members: int, joins: int) -> dict[str, float]:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench", ATHENA_MAX_PAGES_PER_SESSION=members + 10)
    athena = Athena(app)
    state: AthenaState = app.extensions["athena"]
    pages: list[LivePage] = []
    with app.test_request_context():
        boxes = []
        for n in range(members + 1):
            page = state.open_page(f"session{n}")
            box = page.add(make(athena))
            pages.append(page)
            boxes.append(box)
        for n, box in enumerate(boxes[:members]):
            box.enter(f"user{n:04d}")  # type: ignore[attr-defined]
            if n % 100 == 0:
                ack(pages)
        ack(pages)
        newcomer = boxes[members]
        sizes: list[int] = []
        frames: list[int] = []
        cpu: list[float] = []
        for n in range(joins):
            seqs = [page.outbox.last_seq for page in pages]
            started = time.process_time()
            newcomer.enter(f"newcomer{n}")  # type: ignore[attr-defined]
            cpu.append(time.process_time() - started)
            sent = [page.outbox.read(seq) or [] for page, seq in zip(pages, seqs)]
            sizes.append(sum(len(frame) for batch in sent for frame in batch))
            frames.append(sum(len(batch) for batch in sent))
            newcomer.exit()  # type: ignore[attr-defined]
            ack(pages)
        athena.shutdown(app)
    return {
        "bytes": statistics.median(sizes),
        "messages": statistics.median(frames),
        "cpu_ms": statistics.median(cpu) * 1000,
    }


def ack(pages: list[LivePage]) -> None:
    for page in pages:
        page.outbox.ack(page.outbox.last_seq)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--joins", type=int, default=50)
    options = parser.parse_args()
    results = {}
    for name, factory in (
        ("before", _before_factory()),
        ("hook", HookBox),
        ("relay", RelayBox),
    ):
        results[name] = measure(factory, options.members, options.joins)
    print(f"one join in a room of {options.members} members (median of {options.joins})")
    print(f"{'':8} {'bytes sent':>12} {'messages':>9} {'server CPU (ms)':>16}")
    for name, figures in results.items():
        print(
            f"{name:8} {figures['bytes']:>12,.0f} {figures['messages']:>9,.0f}"
            f" {figures['cpu_ms']:>16.2f}"
        )
    b = results["before"]
    for name in ("hook", "relay"):
        a = results[name]
        ratio_bytes, ratio_cpu = a["bytes"] / b["bytes"], a["cpu_ms"] / b["cpu_ms"]
        print(f"{name}/before: bytes {ratio_bytes:.3f}, CPU {ratio_cpu:.3f}")


def _before_factory() -> Callable[[Athena], LiveElement]:
    rooms: dict[int, Room] = {}

    def make(athena: Athena) -> LiveElement:
        # One room per app, like the example app's create_app().
        room = rooms.setdefault(id(athena), Room(athena))
        return BeforeBox(room)

    return make


if __name__ == "__main__":
    main()
