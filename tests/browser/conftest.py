"""Fixtures of the real-browser suite: Chromium, Firefox and WebKit.

Tests written once for every engine take ``engine`` (parametrized over
chromium, firefox, webkit; see ``engines.py``) and ``user`` (a fresh cookie
jar per test) or ``new_user()`` for several people. Each engine is started
once per test process, on first use, and stopped at the end of the session.
Chromium-only tests (Playwright features such as ``page.route``) take
``browser`` and ``context``/``new_context()`` as before.

Servers are started by each test module (module-scoped where tests do not
interfere) through :func:`start_server`, always ``gunicorn -k gevent`` on
127.0.0.1 and stopped by PID.

No browser is ever downloaded: Chromium, Firefox ESR and WebKitGTK come from
Debian. Without one, its tests skip with the reason, except under CI (``CI``
set), where a missing engine is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any, Callable

import pytest

from tests.browser.engines import (
    ENGINES,
    ChromiumEngine,
    Engine,
    EngineUnavailable,
    FirefoxEngine,
    User,
    WebKitEngine,
)
from tests.support import LiveServer

LAUNCH_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: gunicorn's control socket has one default path for every instance; the
#: suites run several servers at once, so it is off.
GUNICORN_ARGS = ["--no-control-socket"]

BROWSER_APP = "tests.apps.browser_app:create_app()"
EXAMPLE_APP = "example_app:create_app()"


def _unavailable(reason: str) -> None:
    """Skip outside CI; in CI a browser suite that cannot run is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = shutil.which("chromium")
    if path is None:
        _unavailable(
            "Debian's chromium is not installed (apt-get install -y chromium; "
            "tests/run.sh installs it)"
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium_executable, args=LAUNCH_ARGS)
        yield browser
        browser.close()


ContextFactory = Callable[..., Any]
UserFactory = Callable[[], User]


@pytest.fixture
def new_context(browser: Any) -> Iterator[ContextFactory]:
    """``new_context(**options)``: a fresh browser context (its own cookies); all closed after."""
    contexts: list[Any] = []

    def factory(**options: Any) -> Any:
        options.setdefault("viewport", {"width": 1100, "height": 760})
        context = browser.new_context(**options)
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield factory
    for context in contexts:
        context.close()  # a no-op for one the test closed already


@pytest.fixture
def context(new_context: ContextFactory) -> Any:
    return new_context()


def start_server(app_spec: str, name: str, **settings: Any) -> LiveServer:
    """Start ``app_spec`` under gunicorn -k gevent -w 1 with ``ATHENA_<KEY>`` settings."""
    env = {f"ATHENA_{key.upper()}": str(value) for key, value in settings.items()}
    server = LiveServer(app_spec, name=f"browser-{name}", env=env, extra_args=GUNICORN_ARGS)
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


@pytest.fixture(scope="module", autouse=True)
def _browser_available(chromium_executable: str) -> None:
    """Skip (or fail in CI) before a module starts its servers when there is no browser."""


@pytest.fixture(scope="session")
def _engines() -> Iterator[dict[str, Engine | BaseException]]:
    """The engines started so far in this process (or why one could not start)."""
    running: dict[str, Engine | BaseException] = {}
    yield running
    for engine in running.values():
        if isinstance(engine, Engine):
            engine.quit()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, _engines: dict[str, Engine | BaseException]) -> Engine:
    """Chromium, Firefox, WebKit: each test taking it runs once per engine."""
    name: str = request.param
    if name not in _engines:
        try:
            if name == "chromium":
                _engines[name] = ChromiumEngine(request.getfixturevalue("browser"))
            elif name == "firefox":
                _engines[name] = FirefoxEngine()
            else:
                _engines[name] = WebKitEngine()
        except (EngineUnavailable, Exception) as error:
            _engines[name] = error
    started = _engines[name]
    if isinstance(started, EngineUnavailable):
        _unavailable(f"{name}: {started}")
    if isinstance(started, BaseException):
        pytest.fail(f"{name} did not start: {started!r}", pytrace=False)
    assert isinstance(started, Engine)
    return started


@pytest.fixture
def new_user(engine: Engine) -> Iterator[UserFactory]:
    """``new_user()``: a person with a cookie jar of their own; all closed after."""
    users: list[User] = []

    def factory() -> User:
        user = engine.new_user()
        users.append(user)
        return user

    yield factory
    for user in users:
        user.close()


@pytest.fixture
def user(new_user: UserFactory) -> User:
    return new_user()
