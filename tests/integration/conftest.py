"""Fixtures of the integration tests: the test app under gunicorn, clients, the proxy.

Every server runs ``tests.apps.reliable:create_app()`` under ``gunicorn -k gevent -w 1``
on 127.0.0.1 and is stopped by its PID at teardown; its settings come from
environment variables (``ATHENA_*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import pytest

from tests.faultproxy import FaultProxy
from tests.integration.servers import start_server
from tests.protocol_client import ProtocolClient
from tests.support import LiveServer

ServerFactory = Callable[..., LiveServer]
ClientFactory = Callable[..., ProtocolClient]


@pytest.fixture
def server_factory(request: pytest.FixtureRequest) -> Iterator[ServerFactory]:
    """Start servers on demand (``factory(port=None, **settings)``); all stopped at teardown."""
    servers: list[LiveServer] = []

    def factory(port: int | None = None, **settings: Any) -> LiveServer:
        name = f"{request.node.name}-{len(servers)}"
        server = start_server(name, port=port, **settings)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def client_factory() -> Iterator[ClientFactory]:
    """Open protocol clients (``factory(base_url, **options)``); all closed at teardown."""
    clients: list[ProtocolClient] = []

    def factory(base_url: str, **options: Any) -> ProtocolClient:
        client = ProtocolClient(base_url, **options)
        clients.append(client)
        return client.open()

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], FaultProxy]]:
    """Start fault proxies in front of a port; all stopped at teardown."""
    proxies: list[FaultProxy] = []

    def factory(upstream_port: int) -> FaultProxy:
        proxy = FaultProxy(upstream_port)
        proxies.append(proxy)
        return proxy.start()

    yield factory
    for proxy in proxies:
        proxy.stop()
