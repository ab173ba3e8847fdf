"""Presence on the in-process broker, driven through flask_athena.testing:
the table, diffs, their order, metas, and entries leaving with their element."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from flask_athena import LiveElement, expose, signals
from flask_athena.presence import REF, sync_diff, sync_state
from flask_athena.testing import AthenaClient, CallFailed, TestPage, collect_signal

from .widgets import athena_of

ROOM = "room"
VECTORS = Path(__file__).parent.parent / "js" / "presence_vectors.json"


class Member(LiveElement):
    """Joins the room when connected; tracks itself on ``enter``; notes every diff."""

    js_class = "Test.Member"

    def __init__(self, log: list[tuple[str, Any]] | None = None) -> None:
        super().__init__()
        self.diffs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.log = log if log is not None else []
        self.on_diff: Callable[[Member], None] | None = None

    def render(self) -> str:
        return ""

    def connected(self) -> None:
        self.join(ROOM)

    @expose
    def enter(self, name: str, **meta: Any) -> dict[str, Any]:
        athena_of_page(self).presence.track(self, ROOM, name, meta)
        return athena_of_page(self).presence.list(ROOM)

    @expose
    def exit(self) -> None:
        athena_of_page(self).presence.untrack(self, ROOM)

    def presence_changed(self, topic: str, joins: Any, leaves: Any) -> None:
        self.diffs.append((topic, joins, leaves))
        self.log.append((self.label(), (sorted(joins), sorted(leaves))))
        # What a widget does: send the diff down, O(1) per member.
        self.call_remote("presence_diff", joins, leaves)
        if self.on_diff is not None:
            self.on_diff(self)

    def label(self) -> str:
        return f"{self.page.id[:4] if self.page else '?'}:{self.id}"


def athena_of_page(element: LiveElement) -> Any:
    assert element.page is not None
    return element.page.state.athena


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(lambda: [Member()], ATHENA_PRESENCE_MAX_MEMBERS=5)


def member(page: TestPage) -> Member:
    element = page.live.elements[1]
    assert isinstance(element, Member)
    return element


def opened(app: Flask, client: AthenaClient | None = None) -> TestPage:
    page = (client or AthenaClient(app)).open()
    page.connect()
    return page


def keys(table: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    return {key: len(metas) for key, metas in table.items()}


def test_track_list_and_one_diff_per_change_to_every_member(app: Flask) -> None:
    alice, bob = opened(app), opened(app)
    try:
        listed = alice.call(1, "enter", "alice", color="red")
        assert keys(listed) == {"alice": 1}
        (meta,) = listed["alice"]
        assert meta["color"] == "red" and isinstance(meta[REF], str)
        bob.call(1, "enter", "bob")
        table = athena_of(app).presence.list(ROOM)
        with app.app_context():
            assert keys(athena_of(app).presence.list(ROOM)) == {"alice": 1, "bob": 1}
        assert keys(table) == {"alice": 1, "bob": 1}
        # alice saw both joins, bob (joined before either) too: one diff each.
        for page in (alice, bob):
            got = [(sorted(j), sorted(lv)) for _, j, lv in member(page).diffs]
            assert got == [(["alice"], []), (["bob"], [])]
            sent = page.received_calls("presence_diff")
            assert [list(joins) for joins, _ in sent] == [["alice"], ["bob"]]
        # A diff carries the one meta that changed, never the whole room.
        assert sent[1] == [{"bob": table["bob"]}, {}]
    finally:
        alice.disconnect()
        bob.disconnect()


def test_two_tabs_are_one_key_with_two_metas(app: Flask) -> None:
    client = AthenaClient(app)
    tab1, tab2, other = opened(app, client), opened(app, client), opened(app)
    try:
        tab1.call(1, "enter", "alice", tab=1)
        tab2.call(1, "enter", "alice", tab=2)
        table = athena_of(app).presence.list(ROOM)
        assert list(table) == ["alice"]
        assert [m["tab"] for m in table["alice"]] == [1, 2]
        # One tab goes: alice stays, with one meta; the leave names that meta.
        tab1.call(1, "exit")
        table = athena_of(app).presence.list(ROOM)
        assert [m["tab"] for m in table["alice"]] == [2]
        _, joins, leaves = member(other).diffs[-1]
        assert joins == {} and [m["tab"] for m in leaves["alice"]] == [1]
        tab1.call(1, "exit")  # untracking twice changes nothing
        assert len(member(other).diffs) == 3
    finally:
        for page in (tab1, tab2, other):
            page.disconnect()


def test_tracking_again_replaces_the_entry_in_one_diff(app: Flask) -> None:
    page = opened(app)
    try:
        page.call(1, "enter", "alice")
        page.call(1, "enter", "alicia", mood="new")
        table = athena_of(app).presence.list(ROOM)
        assert keys(table) == {"alicia": 1}
        _, joins, leaves = member(page).diffs[-1]
        assert list(joins) == ["alicia"] and list(leaves) == ["alice"]
    finally:
        page.disconnect()


def test_entries_leave_on_untrack_detach_and_close(app: Flask) -> None:
    watcher = opened(app)
    pages = [opened(app) for _ in range(3)]
    try:
        for n, page in enumerate(pages):
            page.call(1, "enter", f"user{n}")
        assert len(athena_of(app).presence.list(ROOM)) == 3
        pages[0].call(1, "exit")
        pages[1].detach(1)  # from the browser
        assert pages[2].close() == 204  # the beacon
        assert athena_of(app).presence.list(ROOM) == {}
        leaves = [sorted(lv) for _, _, lv in member(watcher).diffs[3:]]
        assert leaves == [["user0"], ["user1"], ["user2"]]
        # The server-side detach too.
        watcher.call(1, "enter", "w")
        element = member(watcher)
        element.detach()
        assert athena_of(app).presence.list(ROOM) == {}
    finally:
        for page in (watcher, *pages):
            page.disconnect()


def test_changes_made_by_hooks_reach_everyone_in_one_order(app: Flask) -> None:
    log: list[tuple[str, Any]] = []
    pages = [opened(app) for _ in range(3)]
    try:
        for page in pages:
            member(page).log = log
        # The first member greets every newcomer by tracking a bot from its hook.
        greeter = member(pages[0])
        bot = member(pages[2])

        def greet(element: Member) -> None:
            joins = element.diffs[-1][1]
            if "bob" in joins:
                athena_of_page(element).presence.track(bot, ROOM, "bot")

        greeter.on_diff = greet
        pages[1].call(1, "enter", "bob")
        # Every member saw bob's join before the bot's, though the bot was
        # tracked while bob's join was still being delivered.
        for page in pages:
            got = [sorted(j) for _, j, _ in member(page).diffs]
            assert got == [["bob"], ["bot"]]
        order = [changes for _, changes in log]
        assert order == [(["bob"], [])] * 3 + [(["bot"], [])] * 3
        assert keys(athena_of(app).presence.list(ROOM)) == {"bob": 1, "bot": 1}
    finally:
        for page in pages:
            page.disconnect()


def test_members_not_joined_get_no_diffs_but_are_listed(app: Flask) -> None:
    page = AthenaClient(app).open()  # never connected: never joined the room
    watcher = opened(app)
    try:
        page.call(1, "enter", "quiet")
        assert member(page).diffs == []
        assert [sorted(j) for _, j, _ in member(watcher).diffs] == [["quiet"]]
        assert list(athena_of(app).presence.list(ROOM)) == ["quiet"]
    finally:
        watcher.disconnect()


def test_limits_meta_size_and_members_per_topic(app: Flask) -> None:
    page = opened(app)
    try:
        with pytest.raises(CallFailed) as too_large:
            page.call(1, "enter", "x", blob="y" * 2000)
        assert (too_large.value.status, too_large.value.code) == (413, "presence-meta-too-large")
        pages = [opened(app) for _ in range(5)]
        for n, other in enumerate(pages):
            other.call(1, "enter", f"u{n}")
        with pytest.raises(CallFailed) as full:
            page.call(1, "enter", "one-too-many")
        assert (full.value.status, full.value.code) == (429, "presence-full")
        # Re-tracking an element already in replaces, and fits.
        pages[0].call(1, "enter", "renamed")
        assert len(athena_of(app).presence.list(ROOM)) == 5
        for other in pages:
            other.disconnect()
    finally:
        page.disconnect()


def test_bad_keys_and_metas_are_refused_at_once(app: Flask) -> None:
    page = opened(app)
    presence = athena_of(app).presence
    element = member(page)
    try:
        with pytest.raises(TypeError):
            presence.track(element, ROOM, "", {})
        with pytest.raises(TypeError):
            presence.track(element, ROOM, "k", ["not", "a", "dict"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ref"):
            presence.track(element, ROOM, "k", {"ref": "mine"})
        with pytest.raises(RuntimeError, match="on a page"):
            presence.track(Member(), ROOM, "k")
        assert presence.list(ROOM) == {}
    finally:
        page.disconnect()


def test_presence_changed_signal_once_per_change(app: Flask) -> None:
    seen, disconnect = collect_signal(signals.presence_changed, app)
    pages = [opened(app) for _ in range(3)]
    try:
        pages[0].call(1, "enter", "a")
        pages[0].call(1, "exit")
        assert [(s["topic"], list(s["joins"]), list(s["leaves"])) for s in seen] == [
            (ROOM, ["a"], []),
            (ROOM, [], ["a"]),
        ]
    finally:
        disconnect()
        for page in pages:
            page.disconnect()


def test_shutdown_drops_presence_without_telling_closing_pages(app: Flask) -> None:
    pages = [opened(app) for _ in range(3)]
    for n, page in enumerate(pages):
        page.call(1, "enter", f"u{n}")
        page.disconnect()
    members = [member(page) for page in pages]
    before = [len(m.diffs) for m in members]
    athena_of(app).shutdown(app)
    assert [len(m.diffs) for m in members] == before
    assert athena_of(app).presence.list(ROOM) == {}


@pytest.mark.parametrize("case", json.loads(VECTORS.read_text())["cases"], ids=lambda c: c["name"])
def test_sync_functions_agree_with_the_js_helper(case: dict[str, Any]) -> None:
    # tests/js/presence.test.mjs runs the same vectors through athena/presence.
    state = case["state"]
    if "diff" in case:
        assert sync_diff(state, case["diff"]["joins"], case["diff"]["leaves"]) == case["expect"]
    else:
        joins, leaves = sync_state(state, case["new_state"])
        assert {"joins": joins, "leaves": leaves} == case["expect"]


class Relayed(Member):
    js_class = "Test.Relayed"
    presence_relay = "people_changed"


def test_presence_relay_sends_each_diff_as_one_notification(make_app: Callable[..., Flask]) -> None:
    app = make_app(lambda: [Relayed()])
    pages = [opened(app) for _ in range(3)]
    try:
        pages[0].call(1, "enter", "a")
        relayed = [
            [m for m in page.received() if m.get("method") == "people_changed"] for page in pages
        ]
        table = athena_of(app).presence.list(ROOM)
        for messages in relayed:
            (message,) = messages
            # A notification: no call id, so the browser sends no answer.
            assert message["call"] is None and message["widget"] == 1
            assert message["args"] == [table, {}, ROOM]
        # The hook still runs too.
        assert all(len(member(page).diffs) == 1 for page in pages)
    finally:
        for page in pages:
            page.disconnect()
