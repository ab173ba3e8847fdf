"""The exception tree of flask_athena.

Every error that can reach the wire is an :class:`AthenaError` subclass that
carries its HTTP status (``status_code``) and a stable wire ``code`` as class
attributes, the way werkzeug's and click's exceptions do. The codes are listed
in ``docs/protocol.rst``; they never change meaning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .protocol import JSONValue


class AthenaError(Exception):
    """Base class of every flask_athena error."""

    #: HTTP status used when the error answers a whole request.
    status_code: int = 500
    #: Stable machine-readable code sent on the wire.
    code: str = "athena-error"
    #: Message used when none is given.
    default_message: str = "flask_athena error"

    def __init__(self, message: str | None = None, **extra: JSONValue) -> None:
        self.message = message or self.default_message
        #: Extra JSON-able fields sent with the error (e.g. ``expected``).
        self.extra = extra
        super().__init__(self.message)

    def to_json(self) -> dict[str, JSONValue]:
        """The ``{"code", "message", ...}`` object sent to the browser."""
        body: dict[str, JSONValue] = {"code": self.code, "message": self.message}
        body.update(self.extra)
        return body


class ClientError(AthenaError):
    """The request or message was wrong; the browser (or an attacker) must change it."""

    status_code = 400
    code = "bad-request"
    default_message = "Malformed request."


class BadRequest(ClientError):
    """Malformed JSON or a body of the wrong shape."""


class BadMessage(ClientError):
    """A message inside a batch has the wrong shape."""

    code = "bad-message"
    default_message = "Malformed message."


class BadArguments(ClientError):
    """The arguments of a call do not bind to the exposed method's signature."""

    code = "bad-arguments"
    default_message = "The arguments do not match the method."


class UnsupportedMediaType(ClientError):
    """The POST is not ``application/json`` (415)."""

    status_code = 415
    code = "unsupported-media"
    default_message = "Content-Type must be application/json."


class Forbidden(ClientError):
    """Wrong session, token or origin. Nothing was touched."""

    status_code = 403
    code = "forbidden"
    default_message = "Forbidden."


class PageNotFound(ClientError):
    """No such page here, or it closed (404)."""

    status_code = 404
    code = "page-not-found"
    default_message = "No such page."


class WidgetNotFound(ClientError):
    """The page has no widget with that id (404)."""

    status_code = 404
    code = "widget-not-found"
    default_message = "No such widget on this page."


class MethodNotFound(ClientError):
    """Missing and unexposed methods give this same answer, so probing learns nothing."""

    status_code = 404
    code = "method-not-found"
    default_message = "No such exposed method."


class SequenceGap(ClientError):
    """A message's seq skips ahead of the page's next one (409); the browser resends in order."""

    status_code = 409
    code = "sequence-gap"
    default_message = "Message sequence number is ahead of the next expected one."


class PageGone(ClientError):
    """The page closed while the request waited (410); the browser reloads."""

    status_code = 410
    code = "page-gone"
    default_message = "The page was closed."


class BodyTooLarge(ClientError):
    """The body exceeds ``ATHENA_MAX_BODY_SIZE`` (413)."""

    status_code = 413
    code = "body-too-large"
    default_message = "Request body is too large."


class BodyTimeout(ClientError):
    """The POST body did not arrive within ``ATHENA_BODY_TIMEOUT`` (a slow or stalled sender)."""

    status_code = 408
    code = "body-timeout"
    default_message = "The request body did not arrive in time."


class UnreadableBody(BadRequest):
    """The connection broke mid-body, or the body's framing was malformed
    (e.g. a bad chunk size)."""

    default_message = "The request body could not be read."


class TooManyPages(ClientError):
    """A page limit is reached and every page is live (429)."""

    status_code = 429
    code = "too-many-pages"
    default_message = "Too many live pages for this session."


class TooManyStreams(ClientError):
    """An event stream limit is reached (429)."""

    status_code = 429
    code = "too-many-streams"
    default_message = "Too many open event streams for this session."


class TooManyPending(ClientError):
    """Too many server → browser calls wait for an answer (429, ``ATHENA_MAX_PENDING_CALLS``)."""

    status_code = 429
    code = "too-many-pending"
    default_message = "Too many calls waiting for this page."


class RemoteError(AthenaError):
    """The other side raised.

    On the server this is raised by :meth:`RemoteCall.get` when the JavaScript
    method threw; ``js_name`` and ``message`` say what it threw. Sent to the
    browser when an exposed method raised (with a generic message unless the
    app is in debug mode).
    """

    status_code = 200
    code = "remote-error"
    default_message = "The remote method raised an error."

    def __init__(
        self, message: str | None = None, js_name: str = "Error", **extra: JSONValue
    ) -> None:
        super().__init__(message, **extra)
        self.js_name = js_name


class CallTimeout(AthenaError):
    """No answer to a server → browser call within the timeout."""

    status_code = 504
    code = "call-timeout"
    default_message = "The browser did not answer in time."


class CallCancelled(AthenaError):
    """A server → browser call was cancelled (:meth:`RemoteCall.cancel`)."""

    code = "call-cancelled"
    default_message = "The call was cancelled."


class ConnectionLost(AthenaError):
    """The page closed before a server → browser call was answered."""

    status_code = 410
    code = "connection-lost"
    default_message = "The page closed before the call was answered."


class ConfigurationError(ValueError, AthenaError):
    """A bad ``ATHENA_*`` configuration value; raised by ``init_app``."""

    code = "configuration-error"


class BrokerUnavailable(AthenaError):
    """Redis (``ATHENA_BROKER_URL``) cannot be reached; retry later.

    Answered as ``503``, which the browser runtime retries with backoff (a
    retried batch keeps its seqs, so nothing runs twice). The workers
    reconnect on their own.
    """

    status_code = 503
    code = "broker-unavailable"
    default_message = "The message broker is unavailable; retry later."


class PresenceFull(ClientError):
    """A presence topic holds ``ATHENA_PRESENCE_MAX_MEMBERS`` entries already."""

    status_code = 429
    code = "presence-full"
    default_message = "This topic has as many members as it may hold."


class PresenceMetaTooLarge(ClientError):
    """A presence key and meta serialize past ``ATHENA_PRESENCE_MAX_META`` bytes."""

    status_code = 413
    code = "presence-meta-too-large"
    default_message = "The presence details are too large."
