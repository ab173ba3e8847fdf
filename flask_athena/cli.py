"""``flask athena ...``: commands for operators (click, through Flask's CLI).

``Athena.init_app`` adds the group to ``app.cli``, so with ``FLASK_APP`` set:

- ``flask athena pages [--json]``: the live pages of every worker (Redis:
  read from the workers' reports, see :mod:`flask_athena.reports`);
- ``flask athena check``: the configuration, the version, and the broker's
  reachability, server version and round-trip latency; exit status 1 when
  the broker cannot be reached;
- ``flask athena broadcast TOPIC METHOD [ARGS]...``: call ``METHOD`` on every
  element joined to ``TOPIC`` on every worker (Redis); each ARG is JSON when
  it parses as JSON, else a string.

With the in-process broker (``ATHENA_BROKER_URL`` unset) the pages live in the
server's process, which this command is not: ``pages`` and ``broadcast`` say
so and exit with status 1 (the inspector shows that server's pages).
"""

from __future__ import annotations

import json
import statistics
from importlib.metadata import PackageNotFoundError, version
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click
from flask import current_app
from flask.cli import AppGroup

from .config import DEFAULTS
from .protocol import dumps
from .reports import read_reports, redis_client, report_prefix

athena_cli = AppGroup("athena", help="flask_athena: live pages, broker checks, broadcasts.")

#: PING round trips measured by ``flask athena check``.
PINGS = 5


def _state() -> Any:
    state = current_app.extensions.get("athena")
    if state is None:
        raise click.ClickException(
            "flask_athena is not registered on this app. Did you forget to call init_app(app)?"
        )
    return state


def _no_broker(what: str) -> click.ClickException:
    return click.ClickException(
        f"{what} needs ATHENA_BROKER_URL: with the in-process broker the pages live in the "
        "server process, not in this command's (use the inspector there)."
    )


def _safe_url(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


@athena_cli.command("pages")
@click.option("--json", "as_json", is_flag=True, help="Print the workers' reports as JSON.")
def pages_command(as_json: bool) -> None:
    """List the live pages of every worker."""
    state = _state()
    if state.config.broker_url is None:
        raise _no_broker("Listing pages")
    try:
        reports = read_reports(redis_client(state.config.broker_url), report_prefix(current_app))
    except Exception as exc:
        raise click.ClickException(f"Redis unreachable: {type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps(reports, indent=2, sort_keys=True))
        return
    if not reports:
        click.echo("no worker reports (no worker has served a request in the last few seconds)")
        return
    total = 0
    for report in sorted(reports, key=lambda r: (r.get("host", ""), r.get("pid", 0))):
        total += int(report.get("page_count", 0))
        click.echo(
            f"worker {str(report.get('worker', '?'))[:8]} {report.get('host')} "
            f"pid {report.get('pid')}: {report.get('page_count', 0)} pages, "
            f"{report.get('streams', 0)} streams, {report.get('topic_count', 0)} topics"
        )
        for page in report.get("pages", []):
            classes = ", ".join(_classes(page.get("tree", [])))
            status = "connected" if page.get("connected") else f"idle {page.get('idle')}s"
            click.echo(
                f"  page {page.get('ref')}  {status:<14} elements {page.get('elements')}"
                f"  pending {page.get('pending_calls')}  outbox {page.get('outbox_depth')}"
                f"  [{classes}]"
            )
        hidden = int(report.get("page_count", 0)) - len(report.get("pages", []))
        if hidden > 0:
            click.echo(f"  ... and {hidden} more")
    click.echo(f"{len(reports)} workers, {total} pages")


def _classes(tree: list[dict[str, Any]]) -> list[str]:
    names = []
    for node in tree:
        names.append(str(node.get("class")))
        names.extend(_classes(node.get("children", [])))
    return names


@athena_cli.command("check")
def check_command() -> None:
    """Check the configuration and the broker (reachability, version, latency)."""
    state = _state()
    try:
        click.echo(f"flask_athena {version('flask_athena')}")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        click.echo("flask_athena (not installed)")
    click.echo("configuration: valid")
    for key in DEFAULTS:
        value = current_app.config.get(f"ATHENA_{key}")
        if key == "BROKER_URL" and isinstance(value, str):
            value = _safe_url(value)
        click.echo(f"  ATHENA_{key} = {value!r}")
    url = state.config.broker_url
    if url is None:
        click.echo("broker: in-process (ATHENA_BROKER_URL unset): run ONE worker per app")
        return
    client = redis_client(url)
    try:
        times = []
        for _ in range(PINGS):
            start = perf_counter()
            client.ping()
            times.append((perf_counter() - start) * 1000)
        info = client.info("server")
        workers = sum(1 for _ in client.scan_iter(match="athena:worker:*", count=500))
        reports = len(list(client.scan_iter(match=f"{report_prefix(current_app)}*", count=500)))
    except Exception as exc:
        click.echo(f"broker: {_safe_url(url)}: UNREACHABLE ({type(exc).__name__}: {exc})")
        raise SystemExit(1) from exc
    click.echo(f"broker: {_safe_url(url)}: reachable, Redis {info.get('redis_version', '?')}")
    click.echo(
        f"  latency: min {min(times):.2f} ms, median {statistics.median(times):.2f} ms, "
        f"max {max(times):.2f} ms ({PINGS} PINGs)"
    )
    click.echo(f"  live workers (any app): {workers}; reporting for this app: {reports}")


@athena_cli.command("broadcast")
@click.argument("topic")
@click.argument("method")
@click.argument("args", nargs=-1)
def broadcast_command(topic: str, method: str, args: tuple[str, ...]) -> None:
    """Call METHOD(ARGS...) on every element joined to TOPIC, on every worker.

    Each ARG is parsed as JSON when it can be ('42', '"x"', '{"a": 1}'),
    else passed as a string.
    """
    state = _state()
    if state.config.broker_url is None:
        raise _no_broker("Broadcasting")
    values = []
    for arg in args:
        try:
            values.append(json.loads(arg))
        except ValueError:
            values.append(arg)
    try:
        # Published with a client of its own: this process is not a worker,
        # so the broker's greenlets (liveness key, subscriber) stay off.
        reached = state.cluster.publish_broadcast(
            redis_client(state.config.broker_url), topic, method, dumps(values)
        )
    except Exception as exc:
        raise click.ClickException(f"broadcast failed: {type(exc).__name__}: {exc}") from exc
    click.echo(f"sent {method!r} to {topic!r}: {reached} workers received it")
