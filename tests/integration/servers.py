"""Starting the test app under gunicorn, and reading its debug view."""

from __future__ import annotations

from typing import Any

import requests

from tests.support import LiveServer

APP = "tests.apps.reliable:create_app()"

#: gunicorn's control socket has one default path for every instance; the
#: tests run several servers, so it is off.
GUNICORN_ARGS = ["--no-control-socket"]


def start_server(name: str, port: int | None = None, **settings: Any) -> LiveServer:
    """Start the test app with ``ATHENA_<KEY>=<value>`` for each setting."""
    env = {f"ATHENA_{key.upper()}": str(value) for key, value in settings.items()}
    server = LiveServer(APP, name=name, env=env, port=port, extra_args=GUNICORN_ARGS)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


def page_state(server_url: str, page_id: str) -> dict[str, Any]:
    """The test app's ``/debug/<page>`` view: ``{"open": False}`` once the page is freed."""
    response = requests.get(f"{server_url}/debug/{page_id}", timeout=5)
    try:
        return dict(response.json())
    finally:
        response.close()
