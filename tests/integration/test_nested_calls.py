"""An exposed method may wait on ``call_remote(...).get()`` without deadlock.

The browser → server call holds the page's call lane while it waits; the
browser answers the server's call on its separate results lane, which the
server applies at once rather than queuing it behind the running call.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.protocol_client import CallError, ProtocolClient
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server_factory: Any, client_factory: Any) -> ProtocolClient:
    server = server_factory(heartbeat=0.2, call_timeout=5)
    client: ProtocolClient = client_factory(server.url)

    def double(widget: int, value: Any) -> Any:
        if value == "explode":
            raise ValueError("cannot double that")
        return value * 2

    client.handlers["double"] = double
    return client.connect()


def test_exposed_method_waiting_on_browser_gets_its_answer(client: ProtocolClient) -> None:
    probe = client.widget("first")
    assert client.call_value(probe, "ask", 21, timeout=3) == {"asked": 21, "answer": 42}
    call = next(m for _, m in client.messages if m["method"] == "double")
    assert call["call"] is not None and call["args"] == [21]


def test_twenty_waiting_calls_in_one_post_each_get_their_answer(client: ProtocolClient) -> None:
    probe = client.widget("second")
    # One POST: each ask() waits for the browser in turn, inside one request.
    messages = [
        {
            "seq": n + 1,
            "type": "call",
            "widget": probe,
            "method": "ask",
            "args": [n],
            "kwargs": {"timeout": 3},
        }
        for n in range(20)
    ]
    status, body = client.post_raw({"messages": messages})
    assert status == 200
    assert body["results"] == [
        {"seq": n + 1, "ok": {"asked": n, "answer": 2 * n}} for n in range(20)
    ]
    wait_until(lambda: client.stats.results_sent == 20, timeout=5)
    assert client.stats.unexpected_replies == []


def test_browser_error_reaches_the_waiting_method_as_remote_error(client: ProtocolClient) -> None:
    probe = client.widget("first")
    with pytest.raises(CallError) as failure:
        client.call_value(probe, "ask", "explode", timeout=3)
    # The RemoteError raised in ask() is user code failing: a generic
    # per-call remote-error, and the page carries on.
    assert (failure.value.status, failure.value.code) == (200, "remote-error")
    assert client.call_value(probe, "ask", "ab") == {"asked": "ab", "answer": "abab"}
