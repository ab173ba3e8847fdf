"""The chat room of Athena's tutorial: ``say`` goes up, ``hear`` comes down."""

from __future__ import annotations

from flask import session

from flask_athena import LiveElement, expose
from flask_athena.errors import BadArguments

from .extension import athena

TOPIC = "room:lobby"
MAX_NAME = 32
MAX_TEXT = 500


class ChatRoom:
    """Who is in the room. One per app; lives in the worker's memory."""

    def __init__(self) -> None:
        self.members: dict[ChatterBox, str] = {}

    def names(self) -> list[str]:
        return sorted(set(self.members.values()), key=str.lower)

    def enter(self, box: ChatterBox, name: str) -> None:
        self.members[box] = name
        box.join(TOPIC)
        athena.broadcast(TOPIC, "announce", f"{name} joined the room")
        athena.broadcast(TOPIC, "presence", self.names())

    def leave(self, box: ChatterBox) -> None:
        name = self.members.pop(box, None)
        if name is None:
            return
        box.leave(TOPIC)
        athena.broadcast(TOPIC, "announce", f"{name} left the room")
        athena.broadcast(TOPIC, "presence", self.names())


class ChatterBox(LiveElement):
    jsClass = "ChatThing.ChatterBox"  # the tutorial's spelling works too
    template = "chatterbox.html"

    def __init__(self, room: ChatRoom) -> None:
        super().__init__()
        self.room = room
        self.username: str | None = None

    def initial_arguments(self) -> list[object]:
        return [session.get("username")]

    def connected(self) -> None:
        # A returning visitor (name kept in the session) enters at once.
        name = session.get("username") if self.username is None else self.username
        if name:
            self.username = name
            self.room.enter(self, name)

    @expose
    def setUsername(self, username: str) -> list[str]:
        """Enter the room as ``username``; return who is present."""
        name = " ".join(str(username).split())[:MAX_NAME]
        if not name:
            raise BadArguments("Please choose a name.")
        if self.username is not None:
            self.room.leave(self)
        self.username = session["username"] = name
        self.room.enter(self, name)
        return self.room.names()

    @expose
    def say(self, text: str) -> int:
        """Tell everybody in the room; return how many characters were sent."""
        if self.username is None:
            raise BadArguments("Choose a name first.")
        text = str(text)[:MAX_TEXT]
        athena.broadcast(TOPIC, "hear", self.username, text)
        return len(text)

    def disconnected(self, reason: str) -> None:
        self.room.leave(self)

    def detached(self) -> None:
        self.room.leave(self)
