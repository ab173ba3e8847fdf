"""README's deployment, done as a newcomer does it: a fresh virtualenv, only
what README says to install, README's gunicorn command, then the chat.

The regression this pins: ``pip install flask_athena gunicorn`` and
``gunicorn -k gevent`` died at boot with ``No module named 'packaging'``
(gunicorn's gevent worker imports it without declaring it); the test suite
never saw it because pytest brings ``packaging`` along.

The package is installed from a copy of this checkout (not editable, so a
file missing from the package data would fail here); the app is a copy of
``example_app`` in a folder of its own, as a user's app would be, so nothing
is imported from the checkout. One virtualenv per test session; pip's cache
makes the install a matter of seconds after the first run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.protocol_client import ProtocolClient
from tests.readme import command
from tests.support import OUTPUT, ROOT, free_port, wait_until

# A virtualenv and a pip install from scratch: a minute when the machine is
# quiet, several when it is shared.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

#: Not part of the package: copying them would only slow the build down.
SKIP = shutil.ignore_patterns(
    ".git", ".venv", "*.egg-info", "build", "dist", "__pycache__", "test-output",
    "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache", "tests", "bench",
)  # fmt: skip


def clean_env(venv_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a shell with only the new virtualenv activated."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV", "GUNICORN", "ATHENA_"))
    }
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv_dir)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv with README's ``pip install`` run in it (the checkout stands
    in for the name on PyPI)."""
    base = tmp_path_factory.mktemp("fresh-venv")
    source = base / "flask_athena-src"
    shutil.copytree(ROOT, source, ignore=SKIP)
    venv_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    argv = shlex.split(command("pip install "))
    # README names the project on PyPI; here it is this checkout, same extras.
    argv = [str(source) + arg[len("flask_athena") :] if arg.startswith("flask_athena") else arg
            for arg in argv]  # fmt: skip
    assert argv[:2] == ["pip", "install"] and argv[2].endswith("[gunicorn]"), argv
    log = OUTPUT / "logs" / "fresh-venv-pip.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        done = subprocess.run(
            # -q and --no-compile change nothing installed; they save output and time.
            [str(venv_dir / "bin" / "python"), "-m", *argv[:2], "-q", "--no-compile", *argv[2:]],
            env=clean_env(venv_dir),
            cwd=base,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert done.returncode == 0, f"README's pip install failed; see {log}"
    return venv_dir


@pytest.fixture
def readme_server(fresh_venv: Path, tmp_path: Path) -> Iterator[str]:
    """README's gunicorn command, run from a folder holding only the app."""
    shutil.copytree(ROOT / "example_app", tmp_path / "example_app", ignore=SKIP)
    argv = shlex.split(command("gunicorn -k gevent -w 1"))
    assert argv[0] == "gunicorn"
    port = free_port()
    env = clean_env(
        fresh_venv,
        # Settings a user would not give, only so that tests can run side by side.
        GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{port} --no-control-socket",
        SECRET_KEY="fresh-venv-test",
    )
    log = OUTPUT / "logs" / "fresh-venv-gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(fresh_venv / "bin" / argv[0]), *argv[1:]],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gunicorn exited at boot; see {log}:\n{log.read_text()[-2000:]}")
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(up, timeout=60, interval=0.2)
        yield url
    finally:
        # SIGQUIT: gunicorn's quick shutdown (SIGTERM would wait graceful_timeout
        # for the stream the closed client left behind, noticed only on a write).
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_readme_install_and_gunicorn_command_serve_a_working_chat(
    fresh_venv: Path, readme_server: str
) -> None:
    python = fresh_venv / "bin" / "python"
    # The package came from the venv, not from the checkout.
    where = subprocess.run(
        [str(python), "-c", "import flask_athena, packaging; print(flask_athena.__file__)"],
        env=clean_env(fresh_venv),
        cwd=fresh_venv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert where.startswith(str(fresh_venv)), where
    assert sys.prefix != str(fresh_venv)

    page = requests.get(readme_server + "/chat", timeout=10)
    assert page.status_code == 200
    assert 'name="athena-config"' in page.text
    # The runtime and its stylesheet are package data: served from the install.
    runtime = re.search(r'<script type="module" src="([^"]+)">', page.text)
    assert runtime is not None, page.text
    for path in (runtime.group(1), "/_athena/static/athena.css"):
        assert requests.get(readme_server + path, timeout=10).status_code == 200, path

    with ProtocolClient(readme_server, "/chat") as client:
        client.open().connect()
        box = client.widgets[0].id
        assert client.call_value(box, "setUsername", "ann") == ["ann"]
        assert client.call_value(box, "say", "hello from a fresh venv") == 23

        def heard() -> bool:
            return any(
                m.get("method") == "hear" and m["args"] == ["ann", "hello from a fresh venv"]
                for _, m in client.messages
            )

        wait_until(heard, timeout=15)
