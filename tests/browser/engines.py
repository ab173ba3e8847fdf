"""One vocabulary for three browser engines: a test is written once, run on each.

=========  ======================================  ==============================
engine     driver                                  browser
=========  ======================================  ==============================
chromium   Playwright (Python, CDP)                Debian's ``chromium``
firefox    puppeteer-core over WebDriver BiDi,     Debian's ``firefox-esr``
           from ``bidi/firefox.mjs`` (Node; JSON
           commands on stdin, answers on stdout)
webkit     Selenium's ``webdriver.WebKitGTK``      WebKitGTK's ``MiniBrowser``
           (``WebKitWebDriver``) under ``Xvfb``    (``--automation``)
=========  ======================================  ==============================

The vocabulary: an :class:`Engine` makes :class:`User` s (one cookie jar
each: a Playwright context, a BiDi user context, a WebDriver session); a user
opens :class:`Tab` s; a tab can ``goto``/``reload``, ``evaluate`` a JS
function (async allowed; the value comes back through JSON, the same in every
engine), ``wait`` for a JS condition, ``click``/``fill``/``press`` on a CSS
selector, report its console ``errors``, take a ``screenshot`` and ``close``
(as the tab strip closes a tab: ``pagehide`` runs).

Every browser, driver and Xvfb runs in a process group of its own and is
stopped by its PID (:func:`stop_group`).
"""

from __future__ import annotations

import abc
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from tests.support import OUTPUT

ENGINES = ("chromium", "firefox", "webkit")

HERE = Path(__file__).resolve().parent
#: The Node package folder of the Firefox driver (``node_modules`` is not committed).
BIDI = HERE / "bidi"
LOGS = OUTPUT / "logs"
SCREENSHOTS = OUTPUT / "screenshots"

VIEWPORT = (1100, 760)
#: Seconds an action (click, fill, navigation) waits for its element or page.
ACTION_TIMEOUT = 15.0
#: Seconds :meth:`Tab.wait` waits for a condition by default.
WAIT_TIMEOUT = 20.0

#: Firefox preferences: no calls home from a test machine.
FIREFOX_PREFS = {
    "app.update.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "toolkit.telemetry.enabled": False,
}

MINIBROWSER_DIRS = (
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.1",
    "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.0",
    "/usr/lib/aarch64-linux-gnu/webkit2gtk-4.0",
)

# Evaluates ``(function)(arg)`` in the page and answers with a JSON string, so
# every engine returns the same values (undefined becomes null, a Map is not
# silently turned into something else) and a thrown error comes back as text.
_EVALUATE = """(async () => {
  try {
    const value = await (%s)(%s);
    return JSON.stringify({ok: value === undefined ? null : value});
  } catch (error) {
    return JSON.stringify({error: String(error && error.stack || error)});
  }
})()"""

# WebKitWebDriver has no log API and no BiDi: the page's console errors and
# uncaught exceptions are collected by this hook, installed after every
# navigation and before every evaluation (so errors of a document's first
# moments, before the hook, are not seen in WebKit).
_WEBKIT_ERROR_HOOK = """
if (!window.__engineErrors) {
  const seen = window.__engineErrors = [];
  const original = console.error;
  console.error = function (...args) {
    seen.push('console.error: ' + args.map(String).join(' '));
    return original.apply(this, args);
  };
  addEventListener('error', (event) => seen.push('pageerror: ' + event.message));
  addEventListener('unhandledrejection', (event) => setTimeout(() => {
    if (!event.defaultPrevented) seen.push('pageerror: ' + event.reason);
  }));
}
"""


class EngineUnavailable(Exception):
    """The engine cannot run here (the reason says what to install)."""


class JSError(Exception):
    """The evaluated function threw (or rejected); the message is its text."""


def stop_group(process: subprocess.Popen[Any] | None, grace: float = 5.0) -> None:
    """Stop a process started with ``start_new_session=True`` and its whole group."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader may be gone while others of its group live on (a browser's
    # helpers): the group is signalled once more, quietly.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_pid_group(pid: int | None) -> None:
    """SIGKILL the process group led by ``pid`` (a browser its driver started)."""
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------
# The vocabulary
# ---------------------------------------------------------------------------


class Tab(abc.ABC):
    """One tab (page) of one user in one engine."""

    engine: str

    def __init__(self) -> None:
        self._errors: list[str] = []
        self.closed = False

    # -- what each engine provides ------------------------------------------

    @abc.abstractmethod
    def goto(self, url: str) -> None:
        """Load ``url`` and wait for its ``load`` event."""

    @abc.abstractmethod
    def reload(self) -> None:
        """Reload and wait for the ``load`` event."""

    @abc.abstractmethod
    def _evaluate(self, expression: str) -> Any:
        """Evaluate an expression whose value is a Promise of a JSON string."""

    @abc.abstractmethod
    def click(self, selector: str, timeout: float = ACTION_TIMEOUT) -> None:
        """Click the element matching the CSS ``selector`` as a person would."""

    @abc.abstractmethod
    def fill(self, selector: str, text: str, timeout: float = ACTION_TIMEOUT) -> None:
        """Replace the value of the input matching ``selector`` by typing ``text``."""

    @abc.abstractmethod
    def press(self, selector: str, key: str, timeout: float = ACTION_TIMEOUT) -> None:
        """Press ``key`` (``"Enter"``...) in the element matching ``selector``."""

    @abc.abstractmethod
    def _new_errors(self) -> list[str]:
        """Console errors and uncaught exceptions since the last call."""

    @abc.abstractmethod
    def _screenshot(self, path: Path) -> None:
        """Save the whole page as PNG to ``path``."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Close the tab the way the tab strip does (``pagehide`` runs)."""

    # -- the shared vocabulary ------------------------------------------------

    def evaluate(self, function: str, arg: Any = None) -> Any:
        """Call the JS ``function`` (source text; may be async) with ``arg``; its
        value, through JSON. A throw raises :class:`JSError`."""
        raw = self._evaluate(_EVALUATE % (function, json.dumps(arg)))
        result = json.loads(raw)
        if "error" in result:
            raise JSError(result["error"])
        return result["ok"]

    def js(self, expression: str) -> Any:
        """The value of a JS expression (``await`` allowed)."""
        return self.evaluate(f"async () => ({expression})")

    def wait(self, condition: str, timeout: float = WAIT_TIMEOUT, interval: float = 0.05) -> None:
        """Poll the JS expression ``condition`` (``await`` allowed) until truthy.

        A condition that throws (an element not there yet) counts as false;
        AssertionError with the last value or error after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            try:
                if self.js(f"Boolean({condition})"):
                    return
                last = False
            except JSError as error:
                last = error
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.engine}: not true within {timeout}s: {condition} (last: {last})"
                )
            time.sleep(interval)

    @property
    def errors(self) -> list[str]:
        """Console errors and uncaught exceptions of this tab so far, as text."""
        if not self.closed:
            self._errors.extend(self._new_errors())
        return list(self._errors)

    def screenshot(self, name: str) -> Path:
        """Save what a person would see to ``test-output/screenshots/<name>.png``."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self._screenshot(path)
        return path

    def close(self) -> None:
        """Close the tab as a person closes it; its errors stay readable."""
        if self.closed:
            return
        self._errors.extend(self._new_errors())
        self._close()
        self.closed = True


class User(abc.ABC):
    """A person with a cookie jar of their own, who opens tabs."""

    engine: str

    def __init__(self) -> None:
        self.tabs: list[Tab] = []
        self.closed = False

    @abc.abstractmethod
    def _open_tab(self) -> Tab: ...

    @abc.abstractmethod
    def _close(self) -> None: ...

    def open_tab(self, url: str | None = None) -> Tab:
        """A new tab (a window of its own), at ``url`` when given."""
        tab = self._open_tab()
        self.tabs.append(tab)
        if url is not None:
            tab.goto(url)
        return tab

    def close(self) -> None:
        """Close every tab (``pagehide`` runs in each) and forget the cookies."""
        if self.closed:
            return
        self.closed = True
        for tab in self.tabs:
            if not tab.closed:
                tab.close()
        self._close()


class Engine(abc.ABC):
    """One running browser of one engine, shared by the tests of a session."""

    name: str
    #: The browser's name and version, as the driver reports it.
    version: str

    @abc.abstractmethod
    def new_user(self) -> User: ...

    @abc.abstractmethod
    def quit(self) -> None:
        """Close the browser and stop every process started for it."""


# ---------------------------------------------------------------------------
# Chromium: Playwright
# ---------------------------------------------------------------------------


class ChromiumTab(Tab):
    engine = "chromium"

    def __init__(self, page: Any) -> None:
        super().__init__()
        self.page = page
        self._pending: list[str] = []
        page.on("pageerror", lambda exc: self._pending.append(f"pageerror: {exc}"))
        page.on(
            "console",
            lambda msg: (
                self._pending.append(f"console.error: {msg.text}") if msg.type == "error" else None
            ),
        )

    def goto(self, url: str) -> None:
        self.page.goto(url, timeout=ACTION_TIMEOUT * 1000)

    def reload(self) -> None:
        self.page.reload(timeout=ACTION_TIMEOUT * 1000)

    def _evaluate(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def click(self, selector: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.page.locator(selector).click(timeout=timeout * 1000)

    def fill(self, selector: str, text: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.page.locator(selector).fill(text, timeout=timeout * 1000)

    def press(self, selector: str, key: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.page.locator(selector).press(key, timeout=timeout * 1000)

    def _new_errors(self) -> list[str]:
        # Sync Playwright delivers events only while one of its calls runs.
        self.page.evaluate("0")
        pending, self._pending = self._pending, []
        return pending

    def _screenshot(self, path: Path) -> None:
        self.page.screenshot(path=str(path), full_page=True)

    def _close(self) -> None:
        self.page.close()


class ChromiumUser(User):
    engine = "chromium"

    def __init__(self, browser: Any) -> None:
        super().__init__()
        width, height = VIEWPORT
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(ACTION_TIMEOUT * 1000)

    def _open_tab(self) -> Tab:
        return ChromiumTab(self.context.new_page())

    def _close(self) -> None:
        self.context.close()


class ChromiumEngine(Engine):
    """Wraps the suite's Playwright Chromium (conftest's ``browser`` fixture,
    which launches it: one sync Playwright per process)."""

    name = "chromium"

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.version = f"chromium/{browser.version}"

    def new_user(self) -> User:
        return ChromiumUser(self.browser)

    def quit(self) -> None:
        """The ``browser`` fixture closes Chromium."""


# ---------------------------------------------------------------------------
# Firefox: puppeteer-core over WebDriver BiDi, through bidi/firefox.mjs
# ---------------------------------------------------------------------------


class _NodeDriver:
    """The ``firefox.mjs`` process: one JSON command at a time, one answer each."""

    def __init__(self, firefox: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = open(LOGS / f"firefox-driver-{os.getpid()}.log", "ab")  # noqa: SIM115
        env = dict(
            os.environ,
            FIREFOX=firefox,
            FIREFOX_PROFILE_PREFS=json.dumps(FIREFOX_PREFS),
            PUPPETEER_SKIP_DOWNLOAD="1",
        )
        self.process = subprocess.Popen(
            ["node", str(BIDI / "firefox.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd=BIDI,
            start_new_session=True,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), name="firefox-driver", daemon=True
        )
        self._reader.start()
        self._next = 1
        self._lock = threading.Lock()
        #: Firefox's own process group (puppeteer starts it detached).
        self.browser_pid: int | None = None

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def _message(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"the Firefox driver did not answer within {timeout}s") from None
        if not line:
            raise RuntimeError(
                f"the Firefox driver exited (see {LOGS}/firefox-driver-{os.getpid()}.log)"
            )
        message: dict[str, Any] = json.loads(line)
        return message

    def ready(self, timeout: float = 90.0) -> str:
        hello = self._message(timeout)
        if "fatal" in hello:
            raise RuntimeError(f"Firefox did not start: {hello['fatal']}")
        self.browser_pid = hello.get("pid")
        version: str = hello["version"]
        return version

    def call(self, cmd: str, timeout: float = 60.0, **args: Any) -> Any:
        with self._lock:
            command_id = self._next
            self._next += 1
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"id": command_id, "cmd": cmd, **args}).encode())
            self.process.stdin.write(b"\n")
            self.process.stdin.flush()
            answer = self._message(timeout)
            if answer.get("id") != command_id:
                raise RuntimeError(f"the Firefox driver answered out of turn: {answer}")
            if "error" in answer:
                raise RuntimeError(f"Firefox {cmd}: {answer['error']}")
            return answer["value"]

    def stop(self) -> None:
        try:
            if self.process.stdin is not None and not self.process.stdin.closed:
                self.process.stdin.close()  # the script closes Firefox and exits
            self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        finally:
            stop_group(self.process)
            kill_pid_group(self.browser_pid)
            self._reader.join(timeout=5)
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    pipe.close()
            self._log.close()


class FirefoxTab(Tab):
    engine = "firefox"

    def __init__(self, driver: _NodeDriver, handle: int) -> None:
        super().__init__()
        self.driver = driver
        self.handle = handle
        self._reported = 0

    def goto(self, url: str) -> None:
        self.driver.call("goto", tab=self.handle, url=url)

    def reload(self) -> None:
        self.driver.call("reload", tab=self.handle)

    def _evaluate(self, expression: str) -> Any:
        return self.driver.call("evaluate", tab=self.handle, expression=expression)

    def click(self, selector: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.driver.call("click", tab=self.handle, selector=selector, timeout=timeout * 1000)

    def fill(self, selector: str, text: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.driver.call(
            "fill", tab=self.handle, selector=selector, text=text, timeout=timeout * 1000
        )

    def press(self, selector: str, key: str, timeout: float = ACTION_TIMEOUT) -> None:
        self.driver.call(
            "press", tab=self.handle, selector=selector, key=key, timeout=timeout * 1000
        )

    def _new_errors(self) -> list[str]:
        seen: list[str] = self.driver.call("errors", tab=self.handle)
        new, self._reported = seen[self._reported :], len(seen)
        return new

    def _screenshot(self, path: Path) -> None:
        self.driver.call("screenshot", tab=self.handle, path=str(path))

    def _close(self) -> None:
        self.driver.call("closeTab", tab=self.handle)


class FirefoxUser(User):
    engine = "firefox"

    def __init__(self, driver: _NodeDriver) -> None:
        super().__init__()
        self.driver = driver
        self.handle: int = driver.call("newUser")

    def _open_tab(self) -> Tab:
        width, height = VIEWPORT
        return FirefoxTab(
            self.driver, self.driver.call("newTab", user=self.handle, width=width, height=height)
        )

    def _close(self) -> None:
        self.driver.call("closeUser", user=self.handle)


class FirefoxEngine(Engine):
    name = "firefox"

    def __init__(self) -> None:
        firefox = shutil.which("firefox-esr") or shutil.which("firefox")
        if firefox is None:
            raise EngineUnavailable(
                "Debian's firefox-esr is not installed (apt-get install -y firefox-esr; "
                "tests/run.sh installs it)"
            )
        if shutil.which("node") is None:
            raise EngineUnavailable("node is not installed (the Firefox driver is a Node script)")
        if not (BIDI / "node_modules" / "puppeteer-core").is_dir():
            raise EngineUnavailable(
                "puppeteer-core is not installed: cd tests/browser/bidi && "
                "PUPPETEER_SKIP_DOWNLOAD=1 npm ci (tests/run.sh does it)"
            )
        self.driver = _NodeDriver(firefox)
        try:
            self.version = self.driver.ready()
        except BaseException:
            self.driver.stop()
            raise

    def new_user(self) -> User:
        return FirefoxUser(self.driver)

    def quit(self) -> None:
        self.driver.stop()


# ---------------------------------------------------------------------------
# WebKit: Selenium's WebKitGTK driver, MiniBrowser under Xvfb
# ---------------------------------------------------------------------------


class Xvfb:
    """An X display for MiniBrowser (WebKitGTK has no headless mode)."""

    def __init__(self) -> None:
        if shutil.which("Xvfb") is None:
            raise EngineUnavailable(
                "Xvfb is not installed (apt-get install -y xvfb; tests/run.sh installs it)"
            )
        read, write = os.pipe()
        try:
            # -displayfd: Xvfb picks a free display number and writes it to
            # the pipe once it accepts connections.
            self.process = subprocess.Popen(
                [
                    "Xvfb",
                    "-displayfd",
                    str(write),
                    "-screen",
                    "0",
                    "1280x900x24",
                    "-nolisten",
                    "tcp",
                ],
                pass_fds=[write],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            os.close(write)
        try:
            number = b""
            deadline = time.monotonic() + 30
            while not number.endswith(b"\n"):
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError("Xvfb did not start")
                chunk = os.read(read, 16)
                if not chunk:
                    raise RuntimeError("Xvfb exited before naming its display")
                number += chunk
        except BaseException:
            stop_group(self.process)
            raise
        finally:
            os.close(read)
        self.display = f":{number.decode().strip()}"

    def stop(self) -> None:
        stop_group(self.process)


class WebKitTab(Tab):
    engine = "webkit"

    def __init__(self, user: WebKitUser, window: str) -> None:
        super().__init__()
        self.user = user
        self.window = window

    @property
    def driver(self) -> Any:
        """The session, switched to this tab's window."""
        return self.user.switch_to(self.window)

    def _hook(self) -> None:
        self.driver.execute_script(_WEBKIT_ERROR_HOOK)

    def goto(self, url: str) -> None:
        self._errors.extend(self._new_errors())
        self.user.visited(url)
        self.driver.get(url)
        self._hook()

    def reload(self) -> None:
        self._errors.extend(self._new_errors())
        self.driver.refresh()
        self._hook()

    def _evaluate(self, expression: str) -> Any:
        return self.driver.execute_async_script(
            _WEBKIT_ERROR_HOOK
            + "const done = arguments[arguments.length - 1];\n"
            + f"({expression})"
            + ".then(done, (error) => done(JSON.stringify({error: String(error)})));"
        )

    def _element(self, selector: str, timeout: float) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, selector)),
            f"webkit: no visible {selector} within {timeout}s",
        )

    def click(self, selector: str, timeout: float = ACTION_TIMEOUT) -> None:
        self._element(selector, timeout).click()

    def fill(self, selector: str, text: str, timeout: float = ACTION_TIMEOUT) -> None:
        element = self._element(selector, timeout)
        element.clear()
        element.send_keys(text)

    def press(self, selector: str, key: str, timeout: float = ACTION_TIMEOUT) -> None:
        from selenium.webdriver.common.keys import Keys

        self._element(selector, timeout).send_keys(getattr(Keys, key.upper()))

    def _new_errors(self) -> list[str]:
        from selenium.common.exceptions import WebDriverException

        try:
            new: list[str] = self.driver.execute_script(
                "return window.__engineErrors ? window.__engineErrors.splice(0) : [];"
            )
        except WebDriverException:
            return []  # no document (closing, navigating)
        return new

    def _screenshot(self, path: Path) -> None:
        self.driver.save_screenshot(str(path))

    def _close(self) -> None:
        self.user.close_window(self.window)


class _WebKitSession:
    """One WebDriver session: a MiniBrowser of its own, so a cookie jar of its own."""

    def __init__(self, engine: WebKitEngine) -> None:
        from selenium import webdriver
        from selenium.webdriver.webkitgtk.options import Options
        from selenium.webdriver.webkitgtk.service import Service

        options = Options()
        options.binary_location = engine.minibrowser
        options.add_argument("--automation")
        LOGS.mkdir(parents=True, exist_ok=True)
        self._log = open(LOGS / f"webkit-driver-{os.getpid()}.log", "ab")  # noqa: SIM115
        service = Service(
            executable_path=engine.webdriver,
            env=dict(os.environ, DISPLAY=engine.xvfb.display),
            log_output=self._log,
            popen_kw={"start_new_session": True},
        )
        self.service = service
        try:
            with warnings.catch_warnings():
                # Selenium 4.3x's own WebKitGTK driver still uses an API it deprecated.
                warnings.filterwarnings(
                    "ignore", "setting remote_server_addr", category=DeprecationWarning
                )
                self.driver = webdriver.WebKitGTK(options=options, service=service)
        except BaseException:
            stop_group(service.process)
            self._log.close()
            raise
        self.driver.set_script_timeout(60)
        self.driver.set_page_load_timeout(ACTION_TIMEOUT * 2)
        # The first window stays open (at about:blank) for the session's
        # life: closing a session's last window would end the session.
        self.home: str = self.driver.current_window_handle
        self.current = self.home
        #: Origins its tabs visited (their cookies go when the session is reused).
        self.origins: set[str] = set()
        self.version = f"webkit/{self.driver.capabilities.get('browserVersion', '?')}"

    def switch_to(self, window: str) -> Any:
        if self.current != window:
            self.driver.switch_to.window(window)
            self.current = window
        return self.driver

    def reset(self) -> None:
        """Forget the cookies, close every window but home: as good as new."""
        for window in self.driver.window_handles:
            if window != self.home:
                self.switch_to(window).close()
                self.current = ""
        self.switch_to(self.home)
        for origin in sorted(self.origins):
            # WebDriver deletes the cookies of the current document's domain.
            self.driver.get(origin + "/")
            self.driver.delete_all_cookies()
        self.origins.clear()
        self.driver.get("about:blank")

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            stop_group(self.service.process)
            self._log.close()


class WebKitUser(User):
    """A user on a WebDriver session of their own (reused once reset)."""

    engine = "webkit"

    def __init__(self, engine: WebKitEngine, session: _WebKitSession) -> None:
        super().__init__()
        self.engine_ = engine
        self.session = session
        self.driver = session.driver
        self.version = session.version

    def switch_to(self, window: str) -> Any:
        return self.session.switch_to(window)

    def visited(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            self.session.origins.add(f"{parts.scheme}://{parts.netloc}")

    def _open_tab(self) -> Tab:
        self.switch_to(self.session.home)
        # A window, not a tab: a background tab's timers are throttled.
        self.driver.switch_to.new_window("window")
        self.session.current = self.driver.current_window_handle
        width, height = VIEWPORT
        self.driver.set_window_size(width, height)
        return WebKitTab(self, self.session.current)

    def close_window(self, window: str) -> None:
        self.switch_to(window).close()
        self.session.current = ""
        self.switch_to(self.session.home)

    def _close(self) -> None:
        self.engine_.release(self.session)


class WebKitEngine(Engine):
    name = "webkit"

    def __init__(self) -> None:
        self.webdriver = shutil.which("WebKitWebDriver") or ""
        self.minibrowser = next(
            (
                f"{folder}/MiniBrowser"
                for folder in MINIBROWSER_DIRS
                if os.access(f"{folder}/MiniBrowser", os.X_OK)
            ),
            "",
        )
        if not self.webdriver or not self.minibrowser:
            raise EngineUnavailable(
                "WebKitGTK's WebKitWebDriver/MiniBrowser are not installed "
                "(apt-get install -y webkit2gtk-driver; tests/run.sh installs it)"
            )
        try:
            import selenium  # noqa: F401
        except ImportError:
            raise EngineUnavailable("the selenium package is not installed") from None
        self.xvfb = Xvfb()
        #: Sessions of closed users, reset, for the next users: starting a
        #: MiniBrowser costs seconds, forgetting cookies does not.
        self._idle: list[_WebKitSession] = []
        try:
            first = _WebKitSession(self)  # fails here, once, if WebKit cannot start
        except BaseException:
            self.xvfb.stop()
            raise
        self.version = first.version
        self._idle.append(first)

    def new_user(self) -> User:
        session = self._idle.pop() if self._idle else _WebKitSession(self)
        return WebKitUser(self, session)

    def release(self, session: _WebKitSession) -> None:
        """Take back a closed user's session: reset it, or quit it if that fails."""
        try:
            session.reset()
        except Exception:
            session.quit()
            return
        self._idle.append(session)

    def quit(self) -> None:
        try:
            for session in self._idle:
                session.quit()
        finally:
            self._idle.clear()
            self.xvfb.stop()
