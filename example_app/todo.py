"""Nested and dynamic widgets: a list whose items are widgets of their own."""

from __future__ import annotations

import gevent

from flask_athena import LiveElement, expose
from flask_athena.errors import BadArguments

MAX_ITEMS = 100


class TodoItem(LiveElement):
    js_class = "Todo.Item"
    template = "todo_item.html"
    tag = "li"

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.done = False

    def initial_arguments(self) -> list[object]:
        return [self.done]

    @expose
    def toggle(self) -> bool:
        self.done = not self.done
        return self.done

    @expose
    def remove(self) -> None:
        """Detach from the server side: the browser drops the node."""
        self.detach()


class TodoList(LiveElement):
    js_class = "Todo.List"
    template = "todo_list.html"

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        #: The greenlet of a pending server_adds (at most one per list), else None.
        self.adding: gevent.Greenlet | None = None
        for text in texts:
            self.add(TodoItem(text))

    def _new_item(self, text: object) -> TodoItem:
        text = " ".join(str(text).split())[:200]
        if not text:
            raise BadArguments("An item needs some text.")
        if len(self.children) >= MAX_ITEMS:
            raise BadArguments(f"At most {MAX_ITEMS} items.")
        return TodoItem(text)

    @expose
    def add_item(self, text: str) -> TodoItem:
        """Return a new child widget; the browser inserts its node."""
        return self._new_item(text)

    @expose
    def server_adds(self, text: str = "Added by the server") -> None:
        """Let a background greenlet add an item a moment later.

        Bounded work per call: the text and the item limit are checked now,
        in the call (the browser gets the error, nobody logs a traceback),
        and a list runs at most one such greenlet; a call while one is
        pending is refused. The greenlet is killed when the list is detached
        (its page closing detaches it too).
        """
        item = self._new_item(text)
        if self.adding is not None and not self.adding.dead:
            raise BadArguments("The server is already adding an item.")
        self.adding = gevent.spawn(self._add_later, item)

    def _add_later(self, item: TodoItem) -> None:
        gevent.sleep(0.2)
        # add_item may have filled the list meanwhile: then the item is
        # dropped, as the browser's own add would have been refused.
        if self.page is not None and len(self.children) < MAX_ITEMS:
            self.call_remote("insert_item", item)

    def _stop_adding(self) -> None:
        adding, self.adding = self.adding, None
        if adding is not None and adding is not gevent.getcurrent():
            adding.kill(block=False)

    def detached(self) -> None:
        self._stop_adding()

    @expose
    def clear_done(self) -> int:
        """Detach every finished item from the server side; return how many."""
        done = [item for item in self.children if isinstance(item, TodoItem) and item.done]
        for item in done:
            item.detach()
        return len(done)
