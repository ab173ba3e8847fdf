"""Wire shapes of the flask_athena protocol: parsing, validation, SSE framing.

Pure functions and plain data, no Flask and no gevent, so that every rule of
``docs/protocol.rst`` can be tested without a server. The transport calls
:func:`parse_batch` on each POST body and the page builds its outgoing
frames with the ``*_message`` helpers.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, NamedTuple, Union

from .errors import BadMessage, BadRequest

#: Any value that JSON can carry.
JSONValue = Union[None, bool, int, float, str, list["JSONValue"], dict[str, "JSONValue"]]

#: The key that marks a widget value; refused in anything the browser sends.
WIDGET_KEY = "$athena"
#: Most messages one POST may carry.
MAX_MESSAGES_PER_BATCH = 512
#: Deepest nesting of lists/objects accepted from the browser.
MAX_JSON_DEPTH = 32
#: Longest method name accepted (longer names cannot be exposed anyway).
MAX_NAME_LENGTH = 128
#: Longest error name/message kept from a browser's error report.
MAX_ERROR_TEXT = 2000


class CallMessage(NamedTuple):
    """The browser calls an exposed method of a widget."""

    seq: int
    widget: int
    method: str
    args: list[JSONValue]
    kwargs: dict[str, JSONValue]


class DetachMessage(NamedTuple):
    """The browser detached a widget."""

    seq: int
    widget: int


class ResultMessage(NamedTuple):
    """The browser answers server → browser call ``call``."""

    call: int
    ok: JSONValue
    error: dict[str, str] | None


SequencedMessage = Union[CallMessage, DetachMessage]


class Batch(NamedTuple):
    """One POST body, validated."""

    ack: int | None
    sequenced: list[SequencedMessage]
    results: list[ResultMessage]


# -- Unicode ----------------------------------------------------------------
# JSON can carry a lone UTF-16 surrogate ("\ud800" is valid JSON, and a
# browser's JSON.stringify writes one for a broken emoji), Python decodes it
# into a str, and UTF-8 cannot encode that str: it would fail later, far from
# the request, when a frame or a Redis command is encoded. So every string
# crossing the wire is made valid here, in both directions, the way the web
# platform does it (WHATWG "USVString": TextEncoder, fetch, forms): each lone
# surrogate becomes U+FFFD. docs/decisions.rst says why replace, not refuse.

#: What a lone surrogate becomes.
REPLACEMENT_CHARACTER = "\ufffd"

_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of a surrogate in JSON text: the only way a surrogate gets into
# text decoded strictly from UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (``text`` itself if none).

    A high and a low surrogate next to each other become the character they
    stand for, as UTF-16 would read them. The result always encodes to UTF-8.
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _valid_strings(value: Any) -> Any:
    """``value`` with :func:`valid_text` applied to every string and key in it.

    Only called on parsed JSON no deeper than :data:`MAX_JSON_DEPTH`.
    """
    kind = type(value)
    if kind is str:
        return valid_text(value)
    if kind is list:
        return [_valid_strings(item) for item in value]
    if kind is dict:
        return {valid_text(key): _valid_strings(item) for key, item in value.items()}
    return value


# -- encoding ---------------------------------------------------------------


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """Compact JSON with no NaN; raises :class:`TypeError` for anything else.

    ``json.dumps`` escapes CR and LF inside strings, so the result is always a
    single line and safe to put in an SSE ``data:`` field. Lone surrogates in
    strings (app data can hold them too) come out as U+FFFD, so the result
    always encodes to UTF-8.
    """
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
        )
    except ValueError as exc:  # NaN / Infinity
        raise TypeError(f"value is not JSON serializable: {exc}") from None
    # Raw (ensure_ascii=False) surrogates only ever sit inside JSON strings,
    # so replacing them keeps the JSON valid.
    return valid_text(text)


def call_message(call: int | None, widget: int | None, method: str, args_json: str) -> str:
    """A ``call`` message with its arguments already encoded (``args_json``).

    Taking pre-encoded arguments lets a broadcast serialize its arguments once
    and reuse them for every element.
    """
    return (
        f'{{"type":"call","call":{"null" if call is None else call},'
        f'"widget":{"null" if widget is None else widget},'
        f'"method":{json.dumps(method)},"args":{args_json}}}'
    )


def detach_message(widget: int) -> str:
    """The message telling the browser that widget ``widget`` was detached."""
    return f'{{"type":"detach","widget":{widget}}}'


def cancel_message(call: int) -> str:
    """The server cancelled call ``call`` (:meth:`RemoteCall.cancel`)."""
    return f'{{"type":"cancel","call":{call}}}'


def sse_data(data: str) -> bytes:
    """The ``data:`` field of one SSE message, UTF-8; ``data`` must be a single line.

    Never raises for a str: a lone surrogate becomes U+FFFD. Outboxes build
    this *before* they take a sequence number for the message.
    """
    try:
        return b"data: " + data.encode() + b"\n\n"
    except UnicodeEncodeError:
        return b"data: " + valid_text(data).encode() + b"\n\n"


def sse_frame(seq: int, data_field: bytes) -> bytes:
    """One SSE message: ``id: seq`` then a field built by :func:`sse_data`."""
    return b"id: %d\n" % seq + data_field


def sse_message(seq: int, data: str) -> bytes:
    """One SSE message with ``id: seq``; ``data`` must be a single line."""
    return sse_frame(seq, sse_data(data))


def sse_event(name: str, data: JSONValue) -> bytes:
    """A named SSE event without an id (it does not move ``Last-Event-ID``)."""
    return f"event: {name}\ndata: {dumps(data)}\n\n".encode()


def sse_retry(milliseconds: int) -> bytes:
    """The SSE ``retry:`` field: the browser's reconnect delay in milliseconds."""
    return f"retry: {milliseconds}\n\n".encode()


HEARTBEAT_EVENT = sse_event("heartbeat", {})


def gone_event(reason: str) -> bytes:
    """The SSE event saying the page is gone for ``reason`` (the browser reloads)."""
    return sse_event("gone", {"reason": reason})


# -- decoding ---------------------------------------------------------------


def _refuse_widget_values(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if WIDGET_KEY in obj:
        raise BadMessage(f"the key {WIDGET_KEY!r} is reserved")
    return obj


def _too_deep(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_tree(value: Any, limit: int) -> None:
    """:func:`_refuse_widget_values` on every object, then the depth limit.

    One walk over the containers of a parsed value: the same answers as
    parsing with the hook and then :func:`_too_deep`, at a third of the cost.
    """
    too_deep = False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if type(item) is dict:
            if WIDGET_KEY in item:
                raise BadMessage(f"the key {WIDGET_KEY!r} is reserved")
            children: Any = item.values()
        else:
            children = item
        if depth > limit:
            too_deep = True  # go on: a reserved key deeper still wins
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    if too_deep:
        raise BadRequest(f"JSON nested deeper than {limit} levels.")


def loads(body: bytes | str) -> Any:
    """Parse a browser's JSON body; any failure is a :class:`BadRequest`.

    The body must be UTF-8 (RFC 8259). Every string in the result is valid
    Unicode: a lone surrogate written as a ``\\u`` escape becomes U+FFFD (see
    :func:`valid_text`), so nothing downstream can fail to encode it.
    """
    if not isinstance(body, str):
        try:
            # Strict: json.loads would decode bytes with "surrogatepass".
            body = bytes(body).decode()
        except UnicodeDecodeError:
            raise BadRequest("The body is not valid UTF-8.") from None
    elif not body.isascii() and _SURROGATE.search(body) is not None:
        body = valid_text(body)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        # Parse again with the hook: a reserved key met before the syntax
        # error is a BadMessage, as it always was.
        try:
            json.loads(body, object_pairs_hook=_refuse_widget_values)
        except (ValueError, RecursionError):
            pass
        raise BadRequest("The body is not valid JSON.") from None
    if type(value) is dict or type(value) is list:
        _check_tree(value, MAX_JSON_DEPTH)
    if "\\u" in body and _SURROGATE_ESCAPE.search(body) is not None:
        value = _valid_strings(value)
    return value


def _int(value: Any, what: str, minimum: int = 0) -> int:
    # bool is an int subclass; true is not a sequence number.
    if type(value) is not int or value < minimum:
        raise BadMessage(f"{what} must be an integer >= {minimum}")
    return value


def _text(value: Any, limit: int = MAX_ERROR_TEXT) -> str:
    return value[:limit] if isinstance(value, str) else "Error"


def parse_message(raw: Any) -> SequencedMessage | ResultMessage:
    """Validate one message of a batch."""
    if not isinstance(raw, dict):
        raise BadMessage("a message must be an object")
    kind = raw.get("type")
    if kind == "call":
        method = raw.get("method")
        if not isinstance(method, str) or not 0 < len(method) <= MAX_NAME_LENGTH:
            raise BadMessage("call.method must be a non-empty string")
        args = raw.get("args", [])
        kwargs = raw.get("kwargs", {})
        if not isinstance(args, list):
            raise BadMessage("call.args must be a list")
        if not isinstance(kwargs, dict):
            raise BadMessage("call.kwargs must be an object")
        return CallMessage(
            _int(raw.get("seq"), "seq", 1), _int(raw.get("widget"), "widget"), method, args, kwargs
        )
    if kind == "detach":
        return DetachMessage(_int(raw.get("seq"), "seq", 1), _int(raw.get("widget"), "widget"))
    if kind == "result":
        call = _int(raw.get("call"), "result.call")
        if "error" in raw:
            err = raw["error"]
            if not isinstance(err, dict):
                raise BadMessage("result.error must be an object")
            return ResultMessage(
                call, None, {"name": _text(err.get("name")), "message": _text(err.get("message"))}
            )
        if "ok" not in raw:
            raise BadMessage("a result needs 'ok' or 'error'")
        return ResultMessage(call, raw["ok"], None)
    raise BadMessage("message.type must be 'call', 'detach' or 'result'")


def parse_batch(body: bytes | str) -> Batch:
    """Parse and validate a whole POST body (see ``docs/protocol.rst``).

    Sequenced messages must be consecutive within the batch; the page checks
    the first one against what it expects.
    """
    raw = loads(body)
    if not isinstance(raw, dict):
        raise BadRequest("The body must be a JSON object.")
    ack = raw.get("ack")
    if ack is not None:
        ack = _int(ack, "ack")
    messages = raw.get("messages", [])
    if not isinstance(messages, list):
        raise BadRequest("'messages' must be a list.")
    if len(messages) > MAX_MESSAGES_PER_BATCH:
        raise BadRequest(f"At most {MAX_MESSAGES_PER_BATCH} messages per request.")
    sequenced: list[SequencedMessage] = []
    results: list[ResultMessage] = []
    for item in messages:
        message = parse_message(item)
        if isinstance(message, ResultMessage):
            results.append(message)
        else:
            if sequenced and message.seq != sequenced[-1].seq + 1:
                raise BadMessage("seq numbers in one request must be consecutive")
            sequenced.append(message)
    return Batch(ack, sequenced, results)
