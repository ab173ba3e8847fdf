"""What one client, and all clients together, can make a worker hold (DESIGN §11).

A session limit alone is bypassed by not sending the cookie, so pages and
event streams are also counted per *client* (its address, trusting
``ATHENA_PROXY_HOPS`` proxies, see :mod:`flask_athena.proxy`) and per
worker:

=========================  =====================================  ================
what                       key                                    past it
=========================  =====================================  ================
pages per session          ``ATHENA_MAX_PAGES_PER_SESSION``       evict, else 429
pages per client           ``ATHENA_MAX_PAGES_PER_CLIENT``        evict, else 429
pages per worker           ``ATHENA_MAX_PAGES``                   evict, else 429
streams per session        ``ATHENA_MAX_STREAMS_PER_SESSION``     429
streams per client         ``ATHENA_MAX_STREAMS_PER_CLIENT``      429
streams per worker         ``ATHENA_MAX_STREAMS``                 429
=========================  =====================================  ================

*Evict* frees the oldest page of that scope that has no event stream (a
page nobody is looking at: a reload loop, a flood of cookieless GETs), so
a flood pushes out its own pages first and the limit never locks out a
later visitor. Only when every page of the scope is streaming is the new
one refused. Streams are refused, never evicted: a stream is a live
browser tab, and evicting one would make two tabs take turns forever.

IPv6 clients are counted per ``/64``: one host usually holds a whole
``/64`` and could otherwise take a fresh address per request.

Everything here runs in the request's greenlet without yielding; no locks.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, Protocol

from flask import has_request_context, request
from gevent import Timeout

from .errors import BodyTimeout, BodyTooLarge, TooManyPages, TooManyStreams, UnreadableBody
from .proxy import client_address

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .config import AthenaConfig
    from .page import LivePage


logger = logging.getLogger("flask_athena")


class Readable(Protocol):
    """What :func:`read_body` reads from: a request's body stream."""

    def read(self, size: int, /) -> bytes:
        """Up to ``size`` bytes of the body (``b""`` at its end); may block."""


def read_body(stream: Readable, limit: int, timeout: float) -> bytes:
    """Read a request body of at most ``limit`` bytes within ``timeout`` seconds.

    Raises :class:`~flask_athena.errors.BodyTooLarge` (413) past ``limit``,
    :class:`~flask_athena.errors.BodyTimeout` (408) when the body is sent
    slower than that (a client trickling its ``Content-Length`` would hold
    the request's greenlet forever), and
    :class:`~flask_athena.errors.UnreadableBody` (400 ``bad-request``) when the connection
    breaks or the server cannot parse the body (malformed chunked
    encoding): the client's fault, never a 500 with a traceback. The
    deadline needs gevent's cooperative sockets (the deployment: gunicorn's
    gevent worker); a blocking server reads without it.
    """
    deadline = Timeout(timeout)
    deadline.start()
    try:
        body: bytes = stream.read(limit + 1)
    except Timeout as exc:
        if exc is not deadline:
            raise  # somebody else's timeout: not ours to turn into a 408
        raise BodyTimeout() from None
    except Exception as exc:
        # The WSGI server's own errors for a broken body differ by server
        # (OSError for a reset, gunicorn's ChunkMissingTerminator,
        # InvalidChunkSize, NoMoreData...): at this boundary they all mean
        # the client sent no valid body.
        logger.debug("flask_athena: request body unreadable: %r", exc)
        raise UnreadableBody() from None
    finally:
        deadline.close()
    if len(body) > limit:
        raise BodyTooLarge()
    return body


def client_key(address: str) -> str:
    """What the per-client limits count by: the address, an IPv6 one cut to its ``/64``."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is the IPv4 client a.b.c.d
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))


def _oldest_idle(pages: dict[str, LivePage]) -> LivePage | None:
    # Dicts keep insertion order: the first page without a stream is the
    # oldest one nobody is looking at.
    return next((page for page in pages.values() if not page.stream_attached), None)


class Limits:
    """Counts pages and streams per client and per worker; one per app and worker."""

    def __init__(self, config: AthenaConfig) -> None:
        self.config = config
        #: client key -> its open pages on this worker, oldest first.
        self.client_pages: dict[str, dict[str, LivePage]] = {}
        #: page id -> client key, for the pages counted above (the reverse map).
        self.page_clients: dict[str, str] = {}
        #: client key -> number of open event streams this worker serves.
        self.client_streams: dict[str, int] = {}

    def current_client(self, environ: WSGIEnvironment | None = None) -> str | None:
        """The client key of ``environ`` (default: the current request's);
        ``None`` outside a request (pages opened by a script are not a client's)."""
        if environ is None:
            if not has_request_context():
                return None
            environ = request.environ
        return client_key(client_address(environ, self.config.proxy_hops))

    # -- pages ----------------------------------------------------------------

    def make_room_for_page(self, client: str | None, all_pages: dict[str, LivePage]) -> None:
        """Before a page opens: evict the oldest idle page where a limit is
        reached, or raise :class:`TooManyPages` (429) when none is idle.

        ``all_pages`` is every page this worker owns, oldest first.
        """
        if client is not None:
            pages = self.client_pages.get(client)
            if pages is not None and len(pages) >= self.config.max_pages_per_client:
                idle = _oldest_idle(pages)
                if idle is None:
                    raise TooManyPages("Too many live pages for this client address.")
                idle.close("evicted")
        if len(all_pages) >= self.config.max_pages:
            idle = _oldest_idle(all_pages)
            if idle is None:
                raise TooManyPages("This server holds too many live pages; retry later.")
            idle.close("evicted")

    def page_opened(self, page: LivePage, client: str | None) -> None:
        """Count ``page`` against ``client`` (``None``: no address known). Never blocks."""
        if client is not None:
            self.client_pages.setdefault(client, {})[page.id] = page
            self.page_clients[page.id] = client

    def page_closed(self, page: LivePage) -> None:
        """Stop counting ``page`` against its client. Never blocks."""
        client = self.page_clients.pop(page.id, None)
        if client is None:
            return
        pages = self.client_pages.get(client)
        if pages is not None:
            pages.pop(page.id, None)
            if not pages:
                del self.client_pages[client]

    # -- streams --------------------------------------------------------------

    def admit_stream(self, client: str | None, open_streams: int) -> None:
        """Before a stream opens: raise :class:`TooManyStreams` (429) past a limit.

        ``open_streams`` is how many streams this worker serves now.
        """
        if open_streams >= self.config.max_streams:
            raise TooManyStreams("This server holds too many event streams; retry later.")
        if (
            client is not None
            and self.client_streams.get(client, 0) >= self.config.max_streams_per_client
        ):
            raise TooManyStreams("Too many open event streams for this client address.")

    def stream_opened(self, client: str | None) -> None:
        """Count one more stream of ``client`` (after :meth:`admit_stream`). Never blocks."""
        if client is not None:
            self.client_streams[client] = self.client_streams.get(client, 0) + 1

    def stream_closed(self, client: str | None) -> None:
        """Count one stream of ``client`` fewer. Never blocks."""
        if client is None:
            return
        remaining = self.client_streams.get(client, 1) - 1
        if remaining > 0:
            self.client_streams[client] = remaining
        else:
            self.client_streams.pop(client, None)
