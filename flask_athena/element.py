"""``LiveElement``: the server half of a widget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from flask import render_template
from markupsafe import Markup

from . import registry
from .protocol import JSONValue

if TYPE_CHECKING:
    from .page import LivePage
    from .remote import RemoteCall


class LiveElement:
    """The Python half of a live widget; its JavaScript half is ``js_class``.

    Subclass it, set :attr:`js_class` and :attr:`template` (or override
    :meth:`render`), mark browser-callable methods with
    :func:`~flask_athena.expose`, add instances to a page with
    :meth:`LivePage.add <flask_athena.page.LivePage.add>` and put them in a
    template with ``{{ element }}``.

    Hooks run in the greenlet of the request or call that caused them:
    :meth:`connected`, :meth:`disconnected`, :meth:`detached`.
    """

    #: ``"Module.Class"``: the JS module (``static/athena/Module.js`` unless
    #: registered otherwise) and the ``Widget`` subclass it exports.
    js_class: ClassVar[str] = ""
    #: Jinja template of the widget's inner markup, rendered with ``element=self``.
    template: ClassVar[str | None] = None
    #: Tag of the widget's outer node.
    tag: ClassVar[str] = "div"
    #: When set, every presence diff of a topic this element joined is also
    #: sent to the JS widget as ``<presence_relay>(joins, leaves, topic)``: a
    #: notification (no answer, no pending call), serialized once per diff
    #: for all the worker's members. The cheapest way to keep a browser list
    #: in sync (see :mod:`flask_athena.presence`).
    presence_relay: ClassVar[str | None] = None

    # Class-level defaults, so a subclass that forgets super().__init__()
    # still works.
    page: LivePage | None = None
    #: Widget id, unique in its page; ``None`` until added to a page.
    id: int | None = None
    parent: LiveElement | None = None
    _topics: set[str] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Athena spelled it jsClass; accept the tutorial's code as written.
        if "jsClass" in cls.__dict__ and "js_class" not in cls.__dict__:
            cls.js_class = cls.__dict__["jsClass"]
        if cls.js_class and "." not in cls.js_class.strip("."):
            raise ValueError(
                f"{cls.__name__}.js_class must be 'Module.Class', got {cls.js_class!r}"
            )
        clash = registry.exposed_names(cls) & RESERVED_NAMES
        if clash:
            raise TypeError(
                f"{cls.__name__} exposes {sorted(clash)}, which LiveElement uses itself; "
                "rename the method"
            )

    def __init__(self) -> None:
        self.page = None
        self.id = None
        self.parent = None
        self._children: list[LiveElement] = []

    # -- tree ---------------------------------------------------------------

    @property
    def children(self) -> list[LiveElement]:
        """Child elements, in the order they were added."""
        try:
            return self._children
        except AttributeError:
            self._children = []
            return self._children

    def add(self, child: LiveElement) -> LiveElement:
        """Make ``child`` a child of this element and return it.

        Works before or after rendering; once this element is on a page, the
        child joins the page too. A child added after render reaches the
        browser when it is returned from an exposed method or passed to
        :meth:`call_remote` (the browser then inserts ``widget.node``).
        """
        if child.parent is not None and child.parent is not self:
            raise ValueError("the element already has a parent")
        if child not in self.children:
            self.children.append(child)
        child.parent = self
        if self.page is not None:
            self.page.adopt(child)
        return child

    # -- rendering ----------------------------------------------------------

    def initial_arguments(self) -> Sequence[JSONValue]:
        """JSON-able values passed to the JS constructor after the node."""
        return []

    def render(self) -> str:
        """The widget's inner markup (trusted HTML).

        By default renders :attr:`template` with ``element=self``; Jinja
        escapes values. Needs an app context.
        """
        if self.template is None:
            return ""
        return render_template(self.template, element=self)

    def __html__(self) -> Markup:
        page = self.page
        if page is None:
            raise RuntimeError(
                f"{type(self).__name__} is not on a page: "
                "call page.add(element) before rendering it"
            )
        return page.markup(self)

    def __str__(self) -> str:
        return str(self.__html__()) if self.page is not None else object.__repr__(self)

    # -- calls --------------------------------------------------------------

    def call_remote(self, method: str, *args: object) -> RemoteCall:
        """Call ``method`` on the JS widget; return at once.

        The result object's ``get(timeout=None)`` blocks the calling greenlet
        for the browser's return value and raises
        :class:`~flask_athena.errors.RemoteError`,
        :class:`~flask_athena.errors.CallTimeout` or
        :class:`~flask_athena.errors.ConnectionLost`. Ignoring it is fine
        (fire-and-forget). ``LiveElement`` arguments arrive as widgets.
        """
        page = self.page
        if page is None or self.id is None:
            raise RuntimeError(f"{type(self).__name__} is not on a page; add it first")
        return page.send_call(self.id, method, args, self)

    callRemote = call_remote

    # -- groups -------------------------------------------------------------

    def join(self, topic: str) -> None:
        """Receive :meth:`Athena.broadcast` calls sent to ``topic``."""
        page = self.page
        if page is None:
            raise RuntimeError("join() needs the element to be on a page")
        if self._topics is None:
            self._topics = set()
        self._topics.add(topic)
        page.state.topics.join(topic, self)

    @property
    def topics(self) -> frozenset[str]:
        """The topics this element joined."""
        return frozenset(self._topics or ())

    def leave(self, topic: str) -> None:
        """Stop receiving broadcasts to ``topic`` (nothing happens if not joined)."""
        if self._topics and topic in self._topics:
            self._topics.discard(topic)
            if self.page is not None:
                self.page.state.topics.leave(topic, self)

    # -- lifecycle ----------------------------------------------------------

    def detach(self) -> None:
        """Detach this element (and its children) here and in the browser.

        Runs :meth:`detached` hooks children first, leaves every topic and
        frees the page's reference; the browser removes the widget's node.
        """
        page = self.page
        if page is not None:
            page.detach_element(self, notify_browser=True)

    def connected(self) -> None:
        """Hook: the page's event stream attached for the first time."""

    def disconnected(self, reason: str) -> None:
        """Hook: the page closed (``reason``: ``"closed"``, ``"timeout"``, ``"shutdown"``...).

        :meth:`detached` runs right after.
        """

    def detached(self) -> None:
        """Hook: the element was detached (from either side) or its page closed."""

    def presence_changed(self, topic: str, joins: Any, leaves: Any) -> None:
        """Hook: presence in ``topic``, a topic this element joined, changed.

        ``joins`` and ``leaves`` map each key to the metas that came or went
        (see :mod:`flask_athena.presence`; shared by every member: do not
        modify them). Runs on every worker, for every change, in the order
        the changes happened.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.id} js_class={self.js_class!r}>"


#: Names of LiveElement's own API; never reachable from the browser.
RESERVED_NAMES: frozenset[str] = frozenset(
    name for klass in LiveElement.__mro__ for name in vars(klass)
)
