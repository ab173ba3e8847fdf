"""``flask athena ...``: commands for operators (click, through Flask's CLI).

``Athena.init_app`` adds the group to ``app.cli``, so with ``FLASK_APP`` set:

- ``flask athena pages [--json]``: the live pages of every worker (read from
  the workers' reports, see :meth:`~flask_athena.broker.WorkerLink.reports`);
- ``flask athena check``: the configuration, the version, and the broker's
  reachability, server version and round-trip latency; exit status 1 when
  the broker cannot be reached;
- ``flask athena broadcast TOPIC METHOD [ARGS]...``: call ``METHOD`` on every
  element joined to ``TOPIC`` on every worker; each ARG is JSON when
  it parses as JSON, else a string.

The commands speak to the broker's :class:`~flask_athena.broker.WorkerLink`,
from a process that is not a worker (no broker loop starts). With the
in-process broker (``ATHENA_BROKER_URL`` unset) the pages live in the
server's process, which this command is not: ``pages`` and ``broadcast`` say
so and exit with status 1 (the inspector shows that server's pages).
"""

from __future__ import annotations

import json
import statistics
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import click
from flask import current_app
from flask.cli import AppGroup

from .config import DEFAULTS
from .errors import BrokerUnavailable
from .protocol import dumps

if TYPE_CHECKING:
    from .broker import WorkerLink
    from .state import AthenaState

athena_cli = AppGroup("athena", help="flask_athena: live pages, broker checks, broadcasts.")

#: PING round trips measured by ``flask athena check``.
PINGS = 5


def _state() -> AthenaState:
    state: AthenaState | None = current_app.extensions.get("athena")
    if state is None:
        raise click.ClickException(
            "flask_athena is not registered on this app. Did you forget to call init_app(app)?"
        )
    return state


def _link(what: str) -> WorkerLink:
    """The broker's link to the workers, or the error naming the fix."""
    link = _state().broker.link
    if link is None:
        raise click.ClickException(
            f"{what} needs ATHENA_BROKER_URL: with the in-process broker the pages live in the "
            "server process, not in this command's (use the inspector there)."
        )
    return link


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
    link = _link("Listing pages")
    try:
        reports = link.read_reports()
    except BrokerUnavailable as exc:
        raise click.ClickException(exc.message) from exc
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
    link = state.broker.link
    if link is None:
        click.echo("broker: in-process (ATHENA_BROKER_URL unset): run ONE worker per app")
        return
    url = _safe_url(state.config.broker_url or "")
    try:
        result = link.check(PINGS)
    except BrokerUnavailable as exc:
        click.echo(f"broker: {url}: UNREACHABLE ({exc.message})")
        raise SystemExit(1) from exc
    times = result.latencies_ms
    click.echo(f"broker: {url}: reachable, {result.server}")
    click.echo(
        f"  latency: min {min(times):.2f} ms, median {statistics.median(times):.2f} ms, "
        f"max {max(times):.2f} ms ({PINGS} PINGs)"
    )
    click.echo(
        f"  live workers (any app): {result.live_workers}; "
        f"reporting for this app: {result.reporting}"
    )


@athena_cli.command("broadcast")
@click.argument("topic")
@click.argument("method")
@click.argument("args", nargs=-1)
def broadcast_command(topic: str, method: str, args: tuple[str, ...]) -> None:
    """Call METHOD(ARGS...) on every element joined to TOPIC, on every worker.

    Each ARG is parsed as JSON when it can be ('42', '"x"', '{"a": 1}'),
    else passed as a string.
    """
    link = _link("Broadcasting")
    values = []
    for arg in args:
        try:
            values.append(json.loads(arg))
        except ValueError:
            values.append(arg)
    try:
        # Published with a client of its own: this process is not a worker,
        # so the broker's greenlets (liveness key, subscriber) stay off.
        reached = link.publish_from_outside(topic, method, dumps(values))
    except BrokerUnavailable as exc:
        raise click.ClickException(f"broadcast failed: {exc.message}") from exc
    click.echo(f"sent {method!r} to {topic!r}: {reached} workers received it")
