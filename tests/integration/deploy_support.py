"""Run the files of ``deploy/`` as shipped: nginx with the site file, gunicorn as
the systemd unit starts it, certificates made here.

The shipped files are templated only where a test machine must differ from a
server: ports (free ones on 127.0.0.1), paths (this checkout and its
virtualenv) and certificate paths. Every substitution must match exactly
once, so a change to a shipped file that the tests no longer exercise fails
here instead of going untested. Every process is stopped by its PID (nginx
by its process group); every wait has a deadline.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support import OUTPUT, ROOT, free_port, wait_until

DEPLOY = ROOT / "deploy"
#: Where the unit and env files expect the app's checkout (see flask_athena.service).
SERVER_ROOT = "/srv/app"


def substitute(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced by its value; each key must occur exactly once."""
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"{old!r} occurs {count} times in a shipped deploy file"
        text = text.replace(old, new)
    return text


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl); returns (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def read_env_file(path: Path) -> dict[str, str]:
    """A systemd EnvironmentFile: ``KEY=VALUE`` lines, ``#`` comments."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def unit_exec_start() -> list[str]:
    """The ``ExecStart`` of deploy/flask_athena.service, paths moved to this checkout."""
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read(DEPLOY / "flask_athena.service", encoding="utf-8")
    argv = shlex.split(unit["Service"]["ExecStart"])
    venv_bin = str(Path(sys.executable).parent)
    return [
        arg.replace(f"{SERVER_ROOT}/.venv/bin", venv_bin).replace(SERVER_ROOT, str(ROOT))
        for arg in argv
    ]


class Gunicorn:
    """gunicorn started the way deploy/flask_athena.service starts it.

    ``env`` is the EnvironmentFile's content (already templated); the test
    adds only ``--bind`` and ``--no-control-socket`` (several gunicorns run
    side by side here) through ``GUNICORN_CMD_ARGS``, and ``NOTIFY_SOCKET``,
    a datagram socket standing in for systemd's (the unit is ``Type=notify``).
    """

    def __init__(self, name: str, env: dict[str, str], extra_args: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.env = dict(env)
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = OUTPUT / "logs" / f"{name}.log"
        self.notified = b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, tmp: Path) -> Gunicorn:
        cmd_args = shlex.split(self.env.pop("GUNICORN_CMD_ARGS", ""))
        # The env file's own --bind (another host's address) gives way to a free port.
        if "--bind" in cmd_args:
            del cmd_args[cmd_args.index("--bind") : cmd_args.index("--bind") + 2]
        cmd_args += ["--bind", f"127.0.0.1:{self.port}", "--no-control-socket"]
        cmd_args += shlex.split(self.extra_args)
        notify_path = tmp / f"{self.name}.notify"
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        notify.settimeout(0.2)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ATHENA_", "GUNICORN_"))
        }
        env.update(self.env)
        env.update(
            GUNICORN_CMD_ARGS=shlex.join(cmd_args),
            NOTIFY_SOCKET=str(notify_path),
            PYTHONPATH=str(ROOT),
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:  # one run per log: tests count lines
            self.proc = subprocess.Popen(
                unit_exec_start(), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 60
            while b"READY=1" not in self.notified:
                if self.proc.poll() is not None:
                    raise AssertionError(f"gunicorn exited at boot; see {self.log_path}")
                if time.monotonic() > deadline:
                    raise AssertionError("gunicorn never told systemd READY=1")
                try:
                    self.notified += notify.recv(4096)
                except TimeoutError:
                    pass
        finally:
            notify.close()

        def ready() -> bool:
            try:
                return requests.get(self.url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=60, interval=0.1)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # SIGQUIT: quick shutdown; streams of closed browsers are noticed
            # only on a write, so a graceful stop would wait graceful_timeout.
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None


def site_config(upstream_ports: list[int], https_port: int, http_port: int,
                cert: Path, key: Path) -> str:  # fmt: skip
    """deploy/nginx-site.conf for this machine; with two ports, the upstream of
    deploy/two-hosts/upstream.conf in place of the site's own."""
    site = (DEPLOY / "nginx-site.conf").read_text(encoding="utf-8")
    site = substitute(
        site,
        {
            "listen 443 ssl http2;": f"listen 127.0.0.1:{https_port} ssl http2;",
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "/etc/ssl/certs/example.com.pem": str(cert),
            "/etc/ssl/private/example.com.key": str(key),
        },
    )
    start = site.index("upstream athena {")
    end = site.index("}", start) + 1
    if len(upstream_ports) == 1:
        upstream = substitute(
            site[start:end], {"server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_ports[0]};"}
        )
    else:
        shipped = (DEPLOY / "two-hosts" / "upstream.conf").read_text(encoding="utf-8")
        block = shipped[shipped.index("upstream athena {") :]
        upstream = substitute(
            block[: block.index("}") + 1],
            {
                "server 10.0.0.11:8000;": f"server 127.0.0.1:{upstream_ports[0]};",
                "server 10.0.0.12:8000;": f"server 127.0.0.1:{upstream_ports[1]};",
            },
        )
    return site[:start] + upstream + site[end:]


#: The parts of nginx.conf around the site that README.rst asks for
#: (worker_shutdown_timeout), with every path in the test's folder.
MAIN_CONFIG = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
worker_shutdown_timeout 10s;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format tested '$request_method $uri $status $server_protocol $upstream_addr';
    access_log {dir}/access.log tested;
    include {dir}/site.conf;
}}
"""


class Nginx:
    """Debian's nginx with the shipped site, on free ports of 127.0.0.1."""

    def __init__(self, directory: Path, site: str, https_port: int, cert: Path) -> None:
        self.dir = directory
        self.https_port = https_port
        #: The certificate to verify the server with (requests' ``verify=``).
        self.cert = cert
        self.proc: subprocess.Popen[bytes] | None = None
        (directory / "site.conf").write_text(site, encoding="utf-8")
        # As root, nginx's workers would run as "nobody", who cannot write here.
        user = "user root;" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(MAIN_CONFIG.format(dir=directory, user=user))

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def command(self, *args: str) -> list[str]:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        return [nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e",
                str(self.dir / "error.log"), *args]  # fmt: skip

    def start(self) -> Nginx:
        test = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert test.returncode == 0, test.stderr
        self.proc = subprocess.Popen(
            self.command("-g", "daemon off;"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: master and workers
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {self.error_log()[-2000:]}")
            try:
                requests.get(self.url + "/healthz", timeout=2, verify=str(self.cert))
                return bool(self.workers())
            except requests.RequestException:
                return False

        wait_until(up, timeout=30, interval=0.1)
        return self

    def workers(self) -> list[int]:
        """PIDs of the master's worker processes (from /proc)."""
        assert self.proc is not None
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == self.proc.pid:  # ppid
                found.append(int(entry.name))
        return found

    def access_log(self) -> list[list[str]]:
        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [line.split() for line in path.read_text().splitlines()]

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # fast shutdown
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        if (self.dir / "access.log").exists():
            shutil.copy(self.dir / "access.log", OUTPUT / "logs" / f"nginx-{self.https_port}.log")
        self.proc = None
