"""The example app with the inspector on, for the browser test of the inspector.

``tests.apps.inspected_example:create_app()``: ``example_app.create_app()``
plus :class:`flask_athena.inspector.Inspector` with an ``authorize`` that lets
every request in: only for a test server on 127.0.0.1. A real app checks its
own users here (README "Running it in production").
"""

from __future__ import annotations

from flask import Flask

from example_app import create_app as create_example_app
from flask_athena.inspector import Inspector


def create_app() -> Flask:
    app = create_example_app()
    Inspector(app, authorize=lambda: True)
    return app
