"""What a page sends the browser as HTML and JSON: head tags, widget markup, values.

Functions of a :class:`~flask_athena.page.LivePage`, called through its
methods (:meth:`~flask_athena.page.LivePage.head`,
:meth:`~flask_athena.page.LivePage.markup`,
:meth:`~flask_athena.page.LivePage.encode`). They run in the caller's
greenlet and never block; rendering templates needs an app context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import has_app_context
from markupsafe import Markup, escape

from .element import LiveElement
from .protocol import WIDGET_KEY, JSONValue, dumps

if TYPE_CHECKING:
    from .page import LivePage


def head(page: LivePage) -> Markup:
    """The tags for ``<head>``: config, stylesheet, import map, runtime."""
    state = page.state
    config = state.config
    base = state.base_url()
    runtime = f"{base}/static/athena.js"
    settings: dict[str, JSONValue] = {
        "page": page.id,
        "token": page.token,
        "events": f"{base}/{page.id}/events",
        "calls": f"{base}/{page.id}/calls",
        "close": f"{base}/{page.id}/close",
        "heartbeatMs": int(config.heartbeat * 1000),
        "callTimeoutMs": int(config.call_timeout * 1000),
        # Ack often enough that the outbox never trims what a browser
        # that reconnects would still need.
        "ackEvery": max(1, min(256, config.outbox_size // 4)),
        "debug": bool(state.app.debug),
    }
    imports = {"athena": runtime, "athena/presence": f"{base}/static/athena-presence.js"}
    modules = state.modules.names()
    modules.update(el.js_class.rpartition(".")[0] for el in page.elements.values())
    for module in sorted(modules):
        imports[module] = state.module_url(module)
    # "</" would end the <script> element early.
    import_map = dumps({"imports": imports}).replace("</", "<\\/")
    return Markup(
        f'<meta name="athena-config" content="{escape(dumps(settings))}">\n'
        f'<link rel="stylesheet" href="{escape(base)}/static/athena.css">\n'
        f'<script type="importmap">{import_map}</script>\n'
        f'<script type="module" src="{escape(runtime)}"></script>'
    )


def markup(page: LivePage, element: LiveElement) -> Markup:
    """The widget's outer node with its class, module, arguments and inner markup."""
    module = element.js_class.rpartition(".")[0]
    args = dumps(list(element.initial_arguments()))
    inner = str(element.render())
    # Children the template did not place go at the end, so the browser
    # always gets every child the server knows about.
    for child in element.children:
        if f'data-athena-widget="{child.id}"' not in inner:
            inner += str(child.__html__())
    tag = element.tag
    return Markup(
        f'<{tag} data-athena-widget="{element.id}" '
        f'data-athena-class="{escape(element.js_class)}" '
        f'data-athena-module="{escape(page.state.module_url(module))}" '
        f'data-athena-args="{escape(args)}">{inner}</{tag}>'
    )


def encode(page: LivePage, value: object, parent: LiveElement | None = None) -> str:
    """JSON for the browser; ``LiveElement`` values become widget values.

    An element not yet on the page is added (under ``parent`` when given).
    Rendering needs an app context; one is pushed when missing (calls made
    from background greenlets).
    """

    def widget_value(obj: object) -> JSONValue:
        if not isinstance(obj, LiveElement):
            raise TypeError(f"{type(obj).__name__} is not JSON serializable")
        if obj.page is None:
            if parent is not None:
                parent.add(obj)
            else:
                page.add(obj)
        elif obj.page is not page:
            raise TypeError(f"{obj!r} belongs to another page")
        return {
            WIDGET_KEY: "widget",
            "id": obj.id,
            "parent": obj.parent.id if obj.parent is not None else None,
            "html": str(obj.__html__()),
        }

    if has_app_context():
        return dumps(value, default=widget_value)
    with page.state.app.app_context():
        return dumps(value, default=widget_value)
