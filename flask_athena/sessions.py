"""A cookie session interface that verifies each session cookie once.

Every browser → server call is one POST, so the per-request cost of Flask is
the cost of a call, and decoding the signed session cookie (HMAC, base64,
JSON) was a fifth of it. :class:`CachingSessionInterface` is Flask's own
:class:`~flask.sessions.SecureCookieSessionInterface` (same cookie, same
signature, same expiry, same saving) that keeps the decoded data of the
cookies it verified in a small table, for the requests of flask_athena's own
endpoints only: the app's views see Flask's interface unchanged.

``init_app`` installs it through Flask's public hook
(``app.session_interface``) when ``ATHENA_FAST_CALLS`` is on and the app
uses Flask's default interface; an app with its own interface keeps it.
"""

from __future__ import annotations

import time
from typing import Union

from flask import Flask, Request, Response
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer

#: Decoded session cookies kept (oldest dropped first).
SESSION_CACHE_SIZE = 4096

_SCALARS = (str, int, float, bool, type(None))
_Scalar = Union[str, int, float, bool, None]


class CachingSessionInterface(SecureCookieSessionInterface):
    """Flask's cookie sessions, decoding each cookie once on ``path_prefix``.

    Only cookies whose values are plain scalars are kept, so a session built
    from the table shares nothing mutable with it. The signature's age is
    checked against ``PERMANENT_SESSION_LIFETIME`` on every request, as
    itsdangerous does; the table is emptied when the secret keys, the salt
    or the cookie name change. Runs in the request's greenlet; never blocks.
    """

    def __init__(self, path_prefix: str, size: int = SESSION_CACHE_SIZE) -> None:
        #: Requests whose path starts with this use the table.
        self.path_prefix = path_prefix
        #: Most cookies kept.
        self.size = size
        self._keys: tuple[object, ...] | None = None
        self._serializer: URLSafeTimedSerializer | None = None
        #: Cookie header -> (session data, signing timestamp)
        self._table: dict[str, tuple[dict[str, _Scalar], int]] = {}

    def __len__(self) -> int:
        """How many cookies the table holds."""
        return len(self._table)

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Open the request's session; from the table on flask_athena's endpoints."""
        if not request.path.startswith(self.path_prefix) or not app.secret_key:
            return super().open_session(app, request)
        name = self.get_cookie_name(app)
        keys = (
            app.secret_key,
            tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()),
            self.salt,
            name,
        )
        if keys != self._keys:
            self._keys, self._table = keys, {}
            self._serializer = self.get_signing_serializer(app)
        max_age = int(app.permanent_session_lifetime.total_seconds())
        # Keyed by the whole Cookie header: it determines the cookie, and
        # looking it up needs no cookie parsing.
        header = request.headers.get("Cookie")
        hit = self._table.get(header) if header else None
        if hit is not None:
            data, signed = hit
            age = int(time.time()) - signed
            if 0 <= age <= max_age:  # itsdangerous' own test
                return self.session_class(data)
            del self._table[header]  # type: ignore[arg-type]
        value = request.cookies.get(name)
        serializer = self._serializer
        if not value or serializer is None:
            return self.session_class()
        try:
            data, stamp = serializer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if header and isinstance(data, dict) and all(type(v) in _SCALARS for v in data.values()):
            if len(self._table) >= self.size:
                del self._table[next(iter(self._table))]
            self._table[header] = (dict(data), int(stamp.timestamp()))
        return self.session_class(data)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        """Save as Flask does; a session that sets no cookie costs one test.

        Flask's interface reads seven cookie settings before it finds out
        that an unmodified session sets no cookie (most requests, and every
        call that does not write the session); this answers those at once
        with what Flask would do (``Vary: Cookie`` for an accessed session)
        and leaves every other case to Flask.
        """
        if not self.should_set_cookie(app, session) and not (not session and session.modified):
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)
