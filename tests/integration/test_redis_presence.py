"""Presence across gunicorn workers and hosts sharing one real Redis (issue 17).

``tests.apps.presence_app:app`` runs as three gevent workers ("host A") plus
a second gunicorn process ("host B"), all on one ``redis-server`` started
here. Each user is a page read through a real event stream; its roster is
rebuilt from what the server sent (``presence_state`` then
``presence_diff``s) with :func:`flask_athena.presence.sync_diff`, exactly as
the browser helper does.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from flask_athena.presence import sync_diff
from tests.integration.redis_support import Page, RedisServer, Stream
from tests.support import LiveServer, wait_until

pytestmark = pytest.mark.integration

SECRET = "flask-athena-presence-tests-secret"
APP = "tests.apps.presence_app:app"


def settings(redis: RedisServer) -> dict[str, str]:
    return {
        "ATHENA_BROKER_URL": redis.url,
        "ATHENA_HEARTBEAT": "0.5",
        "ATHENA_PAGE_TIMEOUT": "5",
        "ATHENA_CALL_TIMEOUT": "5",
        "SECRET_KEY": SECRET,
    }


def open_page(base: str, pick: Callable[[int], bool] | None = None) -> Page:
    """A new page (on a worker ``pick`` accepts); a first request that a
    loaded machine answers late is retried (the page it made is left to time
    out, as a browser's would)."""
    for _ in range(3):
        try:
            return Page(base, pick=pick)
        except requests.Timeout:
            continue
    return Page(base, pick=pick)


class User:
    """A page, its event stream, and the roster its messages build."""

    #: Every user opened by the running test (closed by the ``hosts`` fixture).
    opened: list[User] = []

    def __init__(
        self,
        base: str,
        name: str,
        tab: int = 0,
        stream_base: str | None = None,
        pick: Callable[[int], bool] | None = None,
    ) -> None:
        self.page = open_page(base, pick)
        User.opened.append(self)
        self.name = name
        self.tab = tab
        self.stream = Stream(self.page, base=stream_base)
        self.stream.start()
        # connected() joins the room: wait until the stream is attached.
        wait_until(lambda: self.stream.served_by, timeout=15)
        assert self.stream.status == 200, (self.stream.status, self.stream.gone)

    def enter(self) -> None:
        self.page.call("enter", self.name, self.tab)

    def roster(self) -> dict[str, list[dict[str, Any]]]:
        table: dict[str, list[dict[str, Any]]] = {}
        for _, message in list(self.stream.messages):
            if message.get("method") == "presence_state":
                (snapshot,) = message["args"]
                table = sync_diff({}, snapshot, {})
            elif message.get("method") == "presence_diff":
                joins, leaves = message["args"]
                table = sync_diff(table, joins, leaves)
        return table

    def names(self) -> set[str]:
        return set(self.roster())

    def diffs(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [
            (m["args"][0], m["args"][1])
            for _, m in list(self.stream.messages)
            if m.get("method") == "presence_diff"
        ]

    def leaves_of(self, name: str) -> int:
        return sum(len(leaves.get(name, [])) for _, leaves in self.diffs())

    def stop(self) -> None:
        self.stream.stop()


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def servers(redis: RedisServer) -> Iterator[tuple[LiveServer, LiveServer]]:
    env = settings(redis)
    a = LiveServer(APP, "presence-host-a", workers=3, env=env)
    b = LiveServer(APP, "presence-host-b", workers=1, env=env)
    try:
        # Generous: four workers boot at once on a shared, loaded machine.
        a.start(timeout=90)
        b.start(timeout=90)
        yield a, b
    finally:
        b.stop()
        a.stop()


@pytest.fixture
def hosts(
    servers: tuple[LiveServer, LiveServer], redis: RedisServer
) -> Iterator[tuple[LiveServer, LiveServer]]:
    """The two hosts, with an empty room before and after the test."""
    yield servers
    for user in list(User.opened):
        user.stop()
        try:
            user.page.close()
        except Exception:  # its worker was killed, or Redis restarted
            pass
    User.opened.clear()
    wait_until(lambda: not redis.keys("athena:pres:*:t:*"), timeout=30)


def users_on_workers(base: str, owners: int, prefix: str) -> list[User]:
    """One user on each of ``owners`` different workers."""
    users: list[User] = []
    while len(users) < owners:
        taken = {user.page.owner for user in users}
        name = f"{prefix}{len(users)}"
        users.append(User(base, name, pick=lambda pid, taken=taken: pid not in taken))
    return users


def wait_all_see(users: list[User], names: set[str], timeout: float = 20) -> None:
    wait_until(lambda: all(u.names() == names for u in users), timeout=timeout)


def test_users_on_three_workers_and_a_second_host_see_each_other(
    hosts: tuple[LiveServer, LiveServer], redis: RedisServer
) -> None:
    a, b = hosts
    users = users_on_workers(a.url, owners=3, prefix="a")
    # Host B's user reads its stream from host A, and the other way round.
    users.append(User(b.url, "b0", stream_base=a.url))
    users.append(User(a.url, "a-far", stream_base=b.url))
    # alice has two tabs, on two different hosts: one key, two metas.
    alice = [User(a.url, "alice", tab=1), User(b.url, "alice", tab=2)]
    everyone = users + alice
    try:
        for user in everyone:
            user.enter()
        names = {u.name for u in everyone}
        wait_all_see(everyone, names)
        wait_until(lambda: all(len(u.roster()["alice"]) == 2 for u in everyone), timeout=20)
        for user in everyone:
            assert sorted(m["tab"] for m in user.roster()["alice"]) == [1, 2]
            # One diff per change: every user got each other user's join once.
            joins = [key for joins, _ in user.diffs() for key in joins]
            assert joins.count("b0") <= 1 and joins.count("alice") <= 2
        # Every worker's list() agrees (calls land on any worker and run on the owner).
        for user in everyone[:6]:
            assert set(user.page.call("listed")[1]) == names

        # One tab closes: one leave of that tab reaches everyone, once.
        gone = users[0]
        assert gone.page.close() == 204
        names.discard(gone.name)
        rest = [u for u in everyone if u is not gone]
        wait_all_see(rest, names)
        # alice's first tab closes too: she stays, with one meta.
        assert alice[0].page.close() == 204
        rest.remove(alice[0])
        wait_until(lambda: all(len(u.roster()["alice"]) == 1 for u in rest), timeout=20)
        assert all(u.names() == names for u in rest)
        # A later change is seen after everything before it (one order), so
        # by now a duplicate leave would have arrived.
        late = User(b.url, "late")
        late.enter()
        rest.append(late)
        wait_all_see(rest, names | {"late"})
        for user in rest:
            if user is not late:
                assert user.leaves_of(gone.name) == 1
                assert user.leaves_of("alice") == 1
        for user in rest:
            assert user.page.close() == 204
        # Nothing of presence is left in Redis.
        wait_until(lambda: not redis.keys("athena:pres:*"), timeout=20)
    finally:
        for user in everyone:
            user.stop()


def test_a_killed_workers_users_leave_every_list(
    hosts: tuple[LiveServer, LiveServer],
) -> None:
    a, b = hosts
    # Users on every worker of host A, and two on host B.
    everyone = users_on_workers(a.url, owners=3, prefix="k")
    everyone += [User(b.url, f"b{n}") for n in range(2)]
    victim = everyone[0].page.owner
    doomed = [u for u in everyone if u.page.owner == victim]
    watchers = [u for u in everyone if u.page.owner != victim]
    for user in everyone:
        user.enter()
    wait_all_see(everyone, {u.name for u in everyone})
    os.kill(victim, signal.SIGKILL)
    # Its liveness key expires within 5 s, a survivor reaps within 2 s more;
    # streams the victim served reconnect elsewhere and replay.
    wait_all_see(watchers, {u.name for u in watchers}, timeout=30)
    for user in watchers:
        for dead in doomed:
            assert user.leaves_of(dead.name) == 1
    for user in watchers[:4]:
        assert set(user.page.call("listed")[1]) == {u.name for u in watchers}


def test_lists_recover_when_redis_loses_the_presence_data(
    hosts: tuple[LiveServer, LiveServer], redis: RedisServer
) -> None:
    a, b = hosts
    users = users_on_workers(a.url, owners=3, prefix="r") + [User(b.url, "rb")]
    names = {u.name for u in users}
    for user in users:
        user.enter()
    wait_all_see(users, names)
    # Every presence key is lost (what a Redis restart does to them); the
    # workers put their live elements' entries back.
    lost = redis.keys("athena:pres:*")
    assert lost
    redis.client().delete(*lost)
    wait_until(lambda: set(redis.keys("athena:pres:*")) >= set(lost), timeout=30)
    wait_all_see(users, names, timeout=30)
    for user in users[:4]:
        assert set(user.page.call("listed")[1]) == names


def test_after_a_redis_restart_the_list_is_whoever_came_back(
    hosts: tuple[LiveServer, LiveServer], redis: RedisServer
) -> None:
    a, b = hosts
    before = [User(a.url, "old-a"), User(b.url, "old-b")]
    for user in before:
        user.enter()
    wait_all_see(before, {"old-a", "old-b"})
    redis.stop()
    redis.start()
    # Pages do not survive a Redis restart: their browsers reload.
    wait_until(lambda: all(u.stream.gone for u in before), timeout=30)
    after: list[User] = []

    def reload(base: str, name: str) -> bool:
        try:
            after.append(User(base, name))
            return True
        except Exception:  # a worker still reconnecting answers 503
            return False

    for base, name in ((a.url, "new-a"), (b.url, "new-b"), (a.url, "new-c")):
        wait_until(lambda base=base, name=name: reload(base, name), timeout=30, interval=0.5)
    for user in after:
        user.enter()
    # Nobody from before the restart lingers; everyone who came back is listed.
    wait_all_see(after, {"new-a", "new-b", "new-c"}, timeout=30)
