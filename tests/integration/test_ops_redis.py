"""Issue 18 on real parts: gunicorn with 2 gevent workers on one real Redis.

``tests.apps.ops_app:create_app()`` with ``ATHENA_METRICS`` on and
prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, the
``child_exit`` hook of ``deploy/gunicorn.conf.py``). Pages are opened until
both workers own some; then one scrape, the CLI and the inspector must each
see both workers' pages, whichever worker answers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.redis_support import Page, RedisServer, pages_on_workers, redis_server
from tests.support import ROOT, LiveServer, wait_until

pytestmark = pytest.mark.integration

__all__ = ["redis_server"]  # the fixture, imported for this module

APP = "tests.apps.ops_app:create_app()"
KEY = "inspector-key-for-tests"


@pytest.fixture(scope="module")
def env(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {
        "ATHENA_BROKER_URL": redis_server.url,
        "ATHENA_METRICS": "true",
        "ATHENA_REPORT_INTERVAL": "0.5",
        "ATHENA_HEARTBEAT": "1",
        "ATHENA_PAGE_TIMEOUT": "60",
        "SECRET_KEY": "flask-athena-ops-tests",
        "INSPECTOR_KEY": KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prometheus")),
    }


@pytest.fixture(scope="module")
def server(env: dict[str, str]) -> Iterator[LiveServer]:
    server = LiveServer(
        APP, "ops-2-workers", workers=2, env=env, extra_args=["-c", "deploy/gunicorn.conf.py"]
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pages(server: LiveServer) -> list[Page]:
    """A page on each worker, then a few more wherever they land."""
    with ThreadPoolExecutor(4) as pool:
        return pages_on_workers(server.url, owners=2) + list(
            pool.map(lambda _: Page(server.url), range(4))
        )


def scrape(server: LiveServer) -> dict[str, float]:
    """One scrape of /metrics: sample name (with labels) -> value."""
    text = requests.get(server.url + "/metrics", timeout=5).text
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def flask_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", APP, "athena", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def owners(pages: list[Page]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for page in pages:
        counts[page.owner] = counts.get(page.owner, 0) + 1
    return counts


def test_one_scrape_sees_both_workers_pages(server: LiveServer, pages: list[Page]) -> None:
    assert len(owners(pages)) == 2
    # Any worker answers the scrape; the multiprocess collector sums both.
    for _ in range(4):
        values = scrape(server)
        assert values["athena_pages_open"] == len(pages)
        assert values["athena_pages_opened_total"] == len(pages)
    # Page ids are never labels.
    text = requests.get(server.url + "/metrics", timeout=5).text
    assert not any(page.id in text for page in pages)


CALLS_OK = "athena_calls_total{code=ok,direction=browser,method=whoami}"
FORWARDED_OK = "athena_forwarded_posts_total{kind=calls,status=200}"


def test_calls_and_forwarded_posts_count_on_every_worker(
    server: LiveServer, pages: list[Page]
) -> None:
    before = scrape(server)
    for page in pages[:4]:
        # Sent to the worker that does not own the page: forwarded to the owner.
        took, ran_in = page.call("whoami", avoid=page.owner)
        assert took != page.owner and ran_in == page.owner
    after = scrape(server)
    assert after[CALLS_OK] - before.get(CALLS_OK, 0) == 4
    assert after[FORWARDED_OK] - before.get(FORWARDED_OK, 0) == 4
    assert after["athena_call_duration_seconds_count{direction=browser}"] >= 4
    # Every loop of both workers runs (gauges set with each worker report).
    assert after["athena_broker_loops_down"] == 0


def test_the_cli_lists_pages_on_every_worker(
    server: LiveServer, env: dict[str, str], pages: list[Page]
) -> None:
    expected = owners(pages)

    def reported() -> dict[int, int]:
        result = flask_cli(env, "pages", "--json")
        assert result.returncode == 0, result.stderr
        return {int(r["pid"]): int(r["page_count"]) for r in json.loads(result.stdout)}

    wait_until(lambda: reported() == expected, timeout=30, interval=0.5)
    text = flask_cli(env, "pages")
    assert text.returncode == 0, text.stderr
    assert f"2 workers, {len(pages)} pages" in text.stdout
    assert "Probe" in text.stdout
    assert not any(page.id in text.stdout for page in pages)


def test_the_cli_checks_the_broker(server: LiveServer, env: dict[str, str]) -> None:
    result = flask_cli(env, "check")
    assert result.returncode == 0, result.stderr
    assert "reachable, Redis" in result.stdout
    assert "latency: min" in result.stdout
    assert "reporting for this app: 2" in result.stdout


def test_the_cli_broadcasts_to_every_worker(server: LiveServer, env: dict[str, str]) -> None:
    result = flask_cli(env, "broadcast", "room", "hear", '"ops"', "42")
    assert result.returncode == 0, result.stderr
    assert "2 workers received it" in result.stdout


def test_the_inspector_refuses_without_authorization(server: LiveServer) -> None:
    for path in ("/_athena/inspector/", "/_athena/inspector/workers.json"):
        response = requests.get(server.url + path, timeout=5)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "forbidden"
        wrong = requests.get(server.url + path, headers={"X-Inspector-Key": "nope"}, timeout=5)
        assert wrong.status_code == 403


def test_the_inspector_shows_both_workers_pages(server: LiveServer, pages: list[Page]) -> None:
    expected = owners(pages)

    def shown() -> dict[int, int]:
        response = requests.get(
            server.url + "/_athena/inspector/workers.json",
            headers={"X-Inspector-Key": KEY},
            timeout=5,
        )
        assert response.status_code == 200
        workers: list[dict[str, Any]] = response.json()["workers"]
        return {int(w["pid"]): int(w["page_count"]) for w in workers}

    # Whichever worker answers, it shows itself live and the other from its report.
    for _ in range(4):
        wait_until(lambda: shown() == expected, timeout=30, interval=0.5)
    page = requests.get(
        server.url + "/_athena/inspector/", headers={"X-Inspector-Key": KEY}, timeout=5
    )
    assert page.status_code == 200
    assert "AthenaInspector.Inspector" in page.text


def test_a_dead_workers_pages_leave_the_sums(server: LiveServer, pages: list[Page]) -> None:
    # gunicorn's child_exit hook (deploy/gunicorn.conf.py) marks the worker
    # dead for prometheus_client: its live gauges leave the sums.
    counts: dict[int, int] = {}

    def consistent() -> bool:
        # Reports are up to ATHENA_REPORT_INTERVAL old: wait until they agree.
        shown = requests.get(
            server.url + "/_athena/inspector/workers.json",
            headers={"X-Inspector-Key": KEY},
            timeout=5,
        ).json()["workers"]
        counts.clear()
        counts.update({int(w["pid"]): int(w["page_count"]) for w in shown})
        return bool(scrape(server)["athena_pages_open"] == sum(counts.values()))

    wait_until(consistent, timeout=30, interval=0.5)
    victim = pages[0].owner
    total = sum(counts.values())
    os.kill(victim, signal.SIGKILL)
    wait_until(
        lambda: scrape(server)["athena_pages_open"] == total - counts[victim],
        timeout=30,
        interval=0.5,
    )


def test_broker_errors_and_reconnects_are_counted(
    server: LiveServer, redis_server: RedisServer
) -> None:
    # After the others: a Redis restart loses every page.
    # Both workers of now use the broker. One was replaced above, and under
    # load its replacement may take a while to boot: wait for it.
    pages_on_workers(server.url, owners=2)
    heartbeat = "athena_broker_errors_total{operation=heartbeat}"
    reconnects = "athena_broker_reconnects_total"
    before = scrape(server)
    redis_server.stop()
    try:
        # Each worker's heartbeat (every second) fails while Redis is down.
        wait_until(
            lambda: scrape(server).get(heartbeat, 0) >= before.get(heartbeat, 0) + 2,
            timeout=30,
            interval=0.5,
        )
    finally:
        redis_server.start()  # same port: the workers reconnect by themselves
    # The heartbeats and subscribers came back and each return is counted.
    # (At least one worker's pair: in one full CI run a worker was replaced
    # during the outage, and a fresh worker's first connection is no reconnect.)
    wait_until(
        lambda: scrape(server).get(reconnects, 0) >= before.get(reconnects, 0) + 2,
        timeout=60,
        interval=0.5,
    )


def test_the_multiprocess_files_exist(env: dict[str, str], pages: list[Page]) -> None:
    # prometheus_client's multiprocess mode really is on (one file per worker and kind).
    files = list(Path(env["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"))
    assert len({f.name.rsplit("_", 1)[-1] for f in files}) >= 2
