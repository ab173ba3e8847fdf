"""gunicorn settings for a flask_athena app.

    gunicorn -c deploy/gunicorn.conf.py 'example_app:create_app()'

Settings given in ``GUNICORN_CMD_ARGS`` or on the command line win over this
file (``--bind``, ``--workers``). More than one worker needs
``ATHENA_BROKER_URL`` (Redis); ``WEB_CONCURRENCY`` sets the worker count.
"""

import resource

bind = "127.0.0.1:8000"  # nginx in front (deploy/nginx-site.conf); never the open internet
worker_class = "gevent"  # one greenlet per open event stream
# Each open page holds one connection (its event stream) for as long as it is open.
worker_connections = 10000
# Open event streams never end by themselves: on a restart, give them a few
# seconds, then close them (browsers reconnect and replay what they missed).
graceful_timeout = 5
# The gevent worker's heartbeat to the master; not a request timeout.
timeout = 30
keepalive = 75  # nginx keeps its upstream connections open (keepalive in the upstream)


def on_starting(server):
    """Raise the open-files limit to what worker_connections needs, or say why not.

    Every connection is a file descriptor; the usual soft limit (1024) caps a
    worker at about a thousand pages, whatever worker_connections says.
    """
    needed = worker_connections + 256  # + log files, sockets to Redis, imports
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        server.log.warning(
            "open-files limit %d < %d needed for %d connections: raise LimitNOFILE "
            "(systemd) or the hard limit (ulimit -Hn)",
            target,
            needed,
            worker_connections,
        )


def child_exit(server, worker):
    """ATHENA_METRICS with several workers (README "Running it in production"):
    drop a dead worker's live gauges from prometheus_client's multiprocess sums.

    Only when ``PROMETHEUS_MULTIPROC_DIR`` is set (an empty directory at each start).
    """
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
