"""The chat room of Athena's tutorial: ``say`` goes up, ``hear`` comes down.

"Here now" is presence (``athena.presence``): each box tracks its user in the
room, keyed by name, so a user with two tabs is listed once, on any number of
workers and hosts. A join or leave reaches each member as one small diff
(``presence_diff``, relayed by ``presence_relay``); only the newcomer gets the whole list
(``presence_state``), never every member on every join.
"""

from __future__ import annotations

import time

from flask import session

from flask_athena import LiveElement, expose
from flask_athena.errors import BadArguments

from .extension import athena

TOPIC = "room:lobby"
MAX_NAME = 32
MAX_TEXT = 500


class ChatterBox(LiveElement):
    jsClass = "ChatThing.ChatterBox"  # the tutorial's spelling works too
    template = "chatterbox.html"
    # Every join or leave, on any worker, reaches the widget's
    # presence_diff(joins, leaves): one small frame per member, the diff
    # serialized once per worker.
    presence_relay = "presence_diff"

    def __init__(self) -> None:
        super().__init__()
        self.username: str | None = None

    def initial_arguments(self) -> list[object]:
        return [session.get("username")]

    def connected(self) -> None:
        # A returning visitor (name kept in the session) enters at once.
        name = session.get("username")
        if name and self.username is None:
            self.enter(name)

    def enter(self, name: str) -> None:
        """Join the room's broadcasts and presence as ``name``; send who is here."""
        self.username = name
        self.join(TOPIC)
        # Tracking again (a new name) replaces this tab's entry.
        athena.presence.track(self, TOPIC, name, {"since": int(time.time())})
        # Through the page's ordered stream, after the diffs already sent, so
        # the browser's list (snapshot + later diffs) is never out of order.
        self.call_remote("presence_state", athena.presence.list(TOPIC))

    @expose
    def setUsername(self, username: str) -> list[str]:
        """Enter the room as ``username``; return who is present."""
        name = " ".join(str(username).split())[:MAX_NAME]
        if not name:
            raise BadArguments("Please choose a name.")
        session["username"] = name
        self.enter(name)
        return sorted(athena.presence.list(TOPIC), key=str.lower)

    @expose
    def say(self, text: str) -> int:
        """Tell everybody in the room; return how many characters were sent."""
        if self.username is None:
            raise BadArguments("Choose a name first.")
        text = str(text)[:MAX_TEXT]
        athena.broadcast(TOPIC, "hear", self.username, text)
        return len(text)
