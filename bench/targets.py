"""The targets measured side by side: adding one is adding an entry to TARGETS.

A target names a WSGI app under ``bench/apps/``, the gunicorn worker class
and count it runs under, and the protocol the load client speaks to it
(``raw``, ``socketio`` or ``athena``, see :mod:`bench.client`). A target
that cannot run in this release says why in ``unavailable``; it is listed
in the table as such, never as a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

GEVENT = "gevent"
GEVENT_WEBSOCKET = "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"


@dataclass(frozen=True)
class Target:
    name: str  #: key in the JSON and on the command line
    label: str  #: column header
    app: str  #: gunicorn app spec
    protocol: str  #: what the load client speaks: raw, socketio or athena
    worker_class: str = GEVENT
    workers: int = 1
    #: services the suite starts for it (``"redis"``: a private redis-server
    #: whose URL the app gets as ATHENA_BROKER_URL)
    services: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None
    #: whether figure F7 (per-worker figures with Redis) applies; the control
    #: endpoints then act on the pages of every worker (bench/apps/cluster.py)
    scale_out: bool = False
    #: figures the library cannot do at all, with the reason
    unsupported: dict[str, str] = field(default_factory=dict)
    #: run the app from this checkout (``--baseline``: another commit's
    #: worktree) instead of this one: its directory and ``PYTHONPATH``
    root: str | None = None


TARGETS: list[Target] = [
    Target("raw", "raw", "bench.apps.raw_app:app", "raw"),
    Target(
        "socketio",
        "Flask-SocketIO",
        "bench.apps.socketio_app:app",
        "socketio",
        worker_class=GEVENT_WEBSOCKET,
        unsupported={"F6": "no replay: messages emitted while a client is away are lost"},
    ),
    Target("athena", "flask_athena", "bench.apps.athena_app:app", "athena"),
    Target(
        "athena-redis-1w",
        "flask_athena+Redis 1w",
        "bench.apps.athena_app:app",
        "athena",
        workers=1,
        services=("redis",),
        scale_out=True,
    ),
    Target(
        "athena-redis-2w",
        "flask_athena+Redis 2w",
        "bench.apps.athena_app:app",
        "athena",
        workers=2,
        services=("redis",),
        scale_out=True,
    ),
]

BY_NAME = {t.name: t for t in TARGETS}


def add_baseline(names: list[str], root: str, label: str) -> list[str]:
    """Twin every flask_athena target of ``names`` with the same app run from
    ``root`` (a checkout of another commit, first on the server's
    ``PYTHONPATH``); return ``names`` with each twin right after its original.

    The twins are ``<name>@base`` in TARGETS, so the table, the JSON and the
    plots show them next to the code under test, measured in the same run.
    """
    out: list[str] = []
    for name in names:
        out.append(name)
        target = BY_NAME[name]
        if target.protocol != "athena":
            continue
        twin = replace(
            target,
            name=f"{name}@base",
            label=f"{target.label} @{label}",
            root=root,
        )
        TARGETS.insert(TARGETS.index(target) + 1, twin)
        BY_NAME[twin.name] = twin
        out.append(twin.name)
    return out
