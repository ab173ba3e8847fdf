"""Server → browser calls waiting for the browser's answer.

:class:`RemoteCall` is what :meth:`LiveElement.call_remote` returns;
:class:`PendingCalls` is one page's table of calls whose answer is still
expected, with their deadlines. Everything here runs in the greenlet that
calls it; only :meth:`RemoteCall.get` blocks (the caller's greenlet).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from time import monotonic

from gevent.event import AsyncResult

from .errors import AthenaError, CallCancelled, CallTimeout, RemoteError
from .protocol import JSONValue, ResultMessage


class RemoteCall:
    """The pending result of a server → browser call.

    Returned at once by :meth:`LiveElement.call_remote` and
    :meth:`LivePage.call_remote`; nothing waits unless :meth:`get` is called.
    """

    __slots__ = ("call_id", "method", "_result", "_timeout", "_table")

    def __init__(
        self, call_id: int, method: str, timeout: float, table: PendingCalls | None = None
    ) -> None:
        #: The call's number on its page (``call`` in the wire messages).
        self.call_id = call_id
        #: The JS method (or global function) called.
        self.method = method
        self._result: AsyncResult = AsyncResult()
        self._timeout = timeout
        self._table = table

    def get(self, timeout: float | None = None) -> JSONValue:
        """Block this greenlet until the browser answers; return its value.

        ``timeout`` defaults to ``ATHENA_CALL_TIMEOUT``; a longer one also
        keeps the reaper from expiring the call before it. Raises
        :class:`RemoteError` (the JS method threw), :class:`CallTimeout`,
        :class:`CallCancelled` or :class:`ConnectionLost` (the page closed
        first).
        """
        if timeout is not None and self._table is not None:
            self._table.extend(self.call_id, monotonic() + timeout)
        # wait() never raises, so an outer gevent.Timeout of the caller is
        # not mistaken for ours.
        self._result.wait(self._timeout if timeout is None else timeout)
        if not self._result.ready():
            raise CallTimeout(f"no answer to {self.method!r} in time")
        value: JSONValue = self._result.get(block=False)
        return value

    def ready(self) -> bool:
        """Whether the call ended (answered, failed, timed out or cancelled)."""
        return bool(self._result.ready())

    def cancel(self) -> bool:
        """Stop waiting for the browser's answer; ``False`` if the call had
        already ended (answered, failed, timed out or cancelled).

        A :meth:`get` waiting now, or called later, raises
        :class:`CallCancelled`; the answer, should it still come, is ignored.
        The browser is told (a ``cancel`` message): the JS method sees it
        through the signal of ``Athena.callSignal()`` and its result is not
        sent. A call the browser has not received yet is still delivered
        (messages are never taken back) and cancelled right after.
        """
        if self._result.ready():
            return False
        self.fail(CallCancelled(f"call to {self.method!r} cancelled"))
        if self._table is not None:
            self._table.cancel(self.call_id)
        return True

    @property
    def error(self) -> BaseException | None:
        """Why the call failed (``None`` while pending or after an answer)."""
        return self._result.exception  # type: ignore[no-any-return]

    def link(self, callback: Callable[[RemoteCall], None]) -> None:
        """Run ``callback(call)`` in the hub once the call ends, however it ends."""
        self._result.rawlink(lambda _result: callback(self))

    def settle(self, value: JSONValue) -> None:
        """End the call with the browser's value (ignored once it ended)."""
        if not self._result.ready():
            self._result.set(value)

    def fail(self, error: AthenaError) -> None:
        """End the call with ``error`` (ignored once it ended)."""
        if not self._result.ready():
            self._result.set_exception(error)


class PendingCalls:
    """One page's server → browser calls still waiting for an answer.

    Bounded by ``limit``; each call has a deadline the reaper enforces
    (:meth:`expire`). ``on_cancel(call_id)`` runs when a tracked call is
    cancelled, so the page can tell the browser. Never blocks.
    """

    __slots__ = ("limit", "timeout", "on_cancel", "_next", "_calls")

    def __init__(self, limit: int, timeout: float, on_cancel: Callable[[int], None]) -> None:
        #: Most calls tracked at once (``ATHENA_MAX_PENDING_CALLS``).
        self.limit = limit
        #: Default seconds a call waits (``ATHENA_CALL_TIMEOUT``).
        self.timeout = timeout
        #: Called with the id of a tracked call that was cancelled.
        self.on_cancel = on_cancel
        self._next = 0
        self._calls: dict[int, tuple[RemoteCall, float]] = {}

    def __len__(self) -> int:
        """How many calls wait for an answer."""
        return len(self._calls)

    def __iter__(self) -> Iterator[RemoteCall]:
        """The calls waiting for an answer, oldest first."""
        return iter([call for call, _ in self._calls.values()])

    def new(self, method: str) -> RemoteCall:
        """A call with the next id, not tracked yet (see :meth:`track`)."""
        self._next += 1
        return RemoteCall(self._next, method, self.timeout, self)

    def track(self, call: RemoteCall) -> bool:
        """Wait for ``call``'s answer until its deadline; ``False`` when full."""
        if len(self._calls) >= self.limit:
            return False
        self._calls[call.call_id] = (call, monotonic() + self.timeout)
        return True

    def resolve(self, result: ResultMessage) -> None:
        """Apply the browser's answer; a duplicate, late or unknown one is ignored."""
        entry = self._calls.pop(result.call, None)
        if entry is None:  # answers are idempotent
            return
        call = entry[0]
        if result.error is not None:
            call.fail(RemoteError(result.error["message"], js_name=result.error["name"]))
        else:
            call.settle(result.ok)

    def expire(self, now: float) -> None:
        """Fail the calls whose deadline passed with :class:`CallTimeout`."""
        expired = [cid for cid, (_, deadline) in self._calls.items() if deadline <= now]
        for cid in expired:
            # The browser is not told: most calls are fire-and-forget, and a
            # page offline past the timeout would get a cancel for each.
            call, _ = self._calls.pop(cid)
            call.fail(CallTimeout(f"no answer to {call.method!r} in time"))

    def extend(self, call_id: int, deadline: float) -> None:
        """Move a call's deadline later (never earlier)."""
        entry = self._calls.get(call_id)
        if entry is not None and entry[1] < deadline:
            self._calls[call_id] = (entry[0], deadline)

    def cancel(self, call_id: int) -> None:
        """Stop tracking a cancelled call; ``on_cancel`` tells the browser."""
        if self._calls.pop(call_id, None) is not None:
            self.on_cancel(call_id)

    def fail_all(self, error: Callable[[], AthenaError]) -> None:
        """Fail every waiting call with a fresh ``error()`` and forget them."""
        calls, self._calls = self._calls, {}
        for call, _ in calls.values():
            call.fail(error())
