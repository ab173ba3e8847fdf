"""Who is the client, and which origin did it use: the forwarding headers to trust.

Behind ``N`` reverse proxies (nginx, a load balancer...) the socket's peer is
the nearest proxy and the ``Host`` header may be an internal name; the real
client address and the public scheme and host travel in ``X-Forwarded-For``,
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and ``X-Forwarded-Port``. Any
client can *send* those headers too, so they are trusted only as far as the
app says (``ATHENA_PROXY_HOPS``, default ``0``: trust none of them).

With ``hops = N > 0`` each header's ``N``-th value from the right is the
one the outermost trusted proxy saw, exactly as werkzeug's
:class:`~werkzeug.middleware.proxy_fix.ProxyFix` reads them with
``x_for = x_proto = x_host = x_port = N``: the reading is delegated to it,
so both agree on every corner (fewer values than hops, IPv6 hosts, ports).
An app that already wraps itself in ``ProxyFix`` keeps ``hops = 0``:
``REMOTE_ADDR`` and ``Host`` are already the public ones then.

The Origin check (CSRF) compares a browser's ``Origin`` with
:func:`public_origin`; the per-client limits count pages and streams per
:func:`client_address`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import get_host

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

#: What :func:`client_address` answers when the server gave no address.
UNKNOWN_ADDRESS = "unknown"


def _public_environ(environ: WSGIEnvironment, hops: int) -> WSGIEnvironment:
    """A copy of ``environ`` as ``ProxyFix`` trusting ``hops`` proxies rewrites it."""
    seen: list[WSGIEnvironment] = []

    def app(fixed: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(fixed)
        return []

    # ProxyFix rewrites the environ it is given: give it a copy, so the
    # request itself keeps what the server saw. It never calls start_response.
    ProxyFix(app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=0)(
        dict(environ), _no_start_response
    )
    return seen[0]


def _no_start_response(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("ProxyFix does not start a response")  # pragma: no cover


def _check_hops(hops: int) -> None:
    if type(hops) is not int or hops < 0:
        raise ValueError(f"hops must be an integer >= 0, got {hops!r}")


def client_address(environ: WSGIEnvironment, hops: int = 0) -> str:
    """The client's IP address as text, trusting ``hops`` proxies in front.

    ``hops = 0``: the socket's peer (``REMOTE_ADDR``), whatever headers say.
    ``hops = N``: the ``N``-th ``X-Forwarded-For`` entry from the right,
    or ``REMOTE_ADDR`` when the header has fewer entries (a request that did
    not come through all the proxies; ProxyFix does the same). Never raises;
    ``"unknown"`` when the server gave no address at all.
    """
    _check_hops(hops)
    if hops:
        environ = _public_environ(environ, hops)
    address = environ.get("REMOTE_ADDR")
    return address.strip() if isinstance(address, str) and address.strip() else UNKNOWN_ADDRESS


def public_origin(environ: WSGIEnvironment, hops: int = 0) -> str:
    """The origin (``scheme://host[:port]``) the browser used, trusting ``hops`` proxies.

    The scheme is ``wsgi.url_scheme`` and the host is the ``Host`` header
    (or ``SERVER_NAME:SERVER_PORT``), the default port left out, as Flask's
    ``request.host_url`` writes them; with ``hops = N`` the ``N``-th value
    from the right of ``X-Forwarded-Proto``, ``-Host`` and ``-Port`` replaces
    each when present. This is what a same-origin browser sends as
    ``Origin``. No trusted-host check here: that is Flask's
    ``TRUSTED_HOSTS``.
    """
    _check_hops(hops)
    if hops:
        environ = _public_environ(environ, hops)
    scheme = environ.get("wsgi.url_scheme") or "http"
    server = environ.get("SERVER_NAME")
    port = environ.get("SERVER_PORT")
    host = get_host(
        scheme,
        environ.get("HTTP_HOST"),
        (server, int(port)) if server and port and port.isdigit() else None,
    )
    return f"{scheme}://{host}"
