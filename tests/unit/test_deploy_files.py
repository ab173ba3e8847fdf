"""The files under deploy/ are the ones README.rst quotes, and agree with each other."""

from __future__ import annotations

import configparser
import runpy
import shlex

import pytest

from flask_athena.config import DEFAULTS
from tests.readme import literal_blocks
from tests.support import ROOT

DEPLOY = ROOT / "deploy"
FILES = sorted(p.relative_to(ROOT).as_posix() for p in DEPLOY.rglob("*") if p.is_file())


def test_deploy_has_the_files_readme_promises() -> None:
    assert FILES == [
        "deploy/athena.env",
        "deploy/flask_athena.service",
        "deploy/gunicorn.conf.py",
        "deploy/nginx-site.conf",
        "deploy/two-hosts/athena.env",
        "deploy/two-hosts/upstream.conf",
    ]


@pytest.mark.parametrize("path", FILES)
def test_readme_quotes_each_deploy_file_exactly(path: str) -> None:
    shipped = (ROOT / path).read_text(encoding="utf-8").rstrip("\n")
    assert shipped in literal_blocks(), f"README.rst's quote of {path} differs from the file"
    assert f"``{path}``" in (ROOT / "README.rst").read_text(encoding="utf-8")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / "flask_athena.service", encoding="utf-8")
    return parser


def test_systemd_unit_runs_the_shipped_gunicorn_config() -> None:
    service = unit()["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/gunicorn")
    config = argv[argv.index("-c") + 1]
    assert config.endswith("/deploy/gunicorn.conf.py")
    assert service["Type"] == "notify"  # gunicorn's arbiter calls sd_notify(READY=1)
    assert service["EnvironmentFile"].endswith("/athena.env")
    settings = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    # The unit's open-files limit covers every connection a worker may hold.
    assert int(service["LimitNOFILE"]) > settings["worker_connections"]
    # systemd waits longer than gunicorn's graceful shutdown before killing.
    assert int(service["TimeoutStopSec"]) > settings["graceful_timeout"]


def test_gunicorn_config_uses_the_gevent_worker() -> None:
    settings = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    assert settings["worker_class"] == "gevent"
    assert settings["worker_connections"] >= 10000
    assert 0 < settings["graceful_timeout"] <= 10
    assert settings["bind"].startswith("127.0.0.1:")  # only nginx reaches it


def test_nginx_read_timeout_is_above_the_heartbeat() -> None:
    site = (DEPLOY / "nginx-site.conf").read_text(encoding="utf-8")
    stream = site[site.index("location /_athena/") :]
    stream = stream[: stream.index("}")]
    assert "proxy_buffering off;" in stream
    timeout = stream.split("proxy_read_timeout")[1].split(";")[0].strip()
    assert timeout.endswith("s")
    assert float(timeout[:-1]) > 2 * DEFAULTS["HEARTBEAT"]
    assert "proxy_set_header Host $http_host;" in site
