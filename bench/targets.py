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
    #: F1 stops after this many pages (levels above are reported as skipped)
    f1_max: int | None = None
    #: the source tree the server imports flask_athena and the app from
    #: (None: this one); ``--baseline REV`` points it at a worktree of REV
    root: str | None = None


#: What the ``bare`` target (a WSGI callable answering JSON POSTs) cannot do.
_BARE_ONLY_CALLS = "a plain WSGI callable with no event stream: the floor of the calls path only"

TARGETS: list[Target] = [
    Target(
        "bare",
        "bare WSGI",
        "bench.apps.bare_app:app",
        "bare",
        unsupported={f: _BARE_ONLY_CALLS for f in ("F1", "F2", "F3", "F5", "F6")},
    ),
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
        f1_max=19000,
    ),
    Target(
        "athena-redis-2w",
        "flask_athena+Redis 2w",
        "bench.apps.athena_app:app",
        "athena",
        workers=2,
        services=("redis",),
        scale_out=True,
        f1_max=19000,
    ),
]

BY_NAME = {t.name: t for t in TARGETS}


def baseline(rev: str, root: str, of: str = "athena") -> Target:
    """Target ``of`` (a flask_athena one) run from another commit's tree
    (``--baseline REV``), as ``<of>-baseline``.

    Measured in the same run as the others, so that a change's before and
    after are compared under the same load.
    """
    target = BY_NAME[of]
    return replace(
        target,
        name=f"{of}-baseline",
        label=f"{target.label} @{rev}",
        env=dict(target.env),
        root=root,
    )
