"""The servers the benchmark measures, one module per target.

Each module exposes a WSGI ``app`` for gunicorn and registers the same
control endpoints (:mod:`bench.apps.control`), so the load client drives
every target the same way.
"""
