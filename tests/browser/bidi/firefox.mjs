// Drives Firefox over WebDriver BiDi (puppeteer-core, no geckodriver) for the
// Python browser tests (tests/browser/engines.py).
//
// Protocol: one JSON object per line. The first line written is
//   {"ready": true, "version": "firefox/153.0", "pid": <Firefox's pid>}
// (or {"fatal": "..."}). Then every line read on stdin is a command
//   {"id": N, "cmd": "<name>", ...arguments}
// answered by exactly one line {"id": N, "value": ...} or {"id": N, "error": "..."}.
// Commands run one at a time, in order. stdin closing closes Firefox and exits.
//
// Environment: FIREFOX (the binary), FIREFOX_PROFILE_PREFS (JSON object of
// extra preferences, optional).

import readline from "node:readline";
import puppeteer from "puppeteer-core";

const write = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);

/** Objects the Python side refers to by number. */
const objects = new Map();
let nextHandle = 1;
const keep = (object) => {
  const handle = nextHandle++;
  objects.set(handle, object);
  return handle;
};
const get = (handle) => {
  const object = objects.get(handle);
  if (object === undefined) throw new Error(`no object ${handle}`);
  return object;
};

/** Console errors and uncaught exceptions per page, as text. */
const errors = new WeakMap();

let browser;
try {
  browser = await puppeteer.launch({
    browser: "firefox",
    protocol: "webDriverBiDi",
    executablePath: process.env.FIREFOX,
    headless: true,
    // The Python side stops Firefox by its pid (process group) if this
    // script dies; puppeteer must not install signal handlers of its own.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    extraPrefsFirefox: JSON.parse(process.env.FIREFOX_PROFILE_PREFS || "{}"),
  });
} catch (error) {
  write({ fatal: String(error && error.stack || error) });
  process.exit(1);
}
write({ ready: true, version: await browser.version(), pid: browser.process()?.pid ?? null });

async function withElement(page, selector, timeout, action) {
  const element = await page.waitForSelector(selector, { visible: true, timeout });
  if (!element) throw new Error(`no ${selector}`);
  try {
    await action(element);
  } finally {
    await element.dispose();
  }
}

const commands = {
  async newUser() {
    return keep(await browser.createBrowserContext());
  },
  async closeUser({ user }) {
    const context = get(user);
    objects.delete(user);
    await context.close();
  },
  async newTab({ user, width, height }) {
    // A window of its own, as Playwright gives every Chromium page: a background
    // tab would have its timers throttled while the test drives another user.
    const page = await get(user).newPage({ type: "window" });
    const seen = [];
    errors.set(page, seen);
    page.on("console", (message) => {
      if (message.type() === "error") seen.push(`console.error: ${message.text()}`);
    });
    page.on("pageerror", (error) => seen.push(`pageerror: ${error.message ?? error}`));
    await page.setViewport({ width, height });
    return keep(page);
  },
  async goto({ tab, url }) {
    await get(tab).goto(url, { waitUntil: "load" });
  },
  async reload({ tab }) {
    await get(tab).reload({ waitUntil: "load" });
  },
  async evaluate({ tab, expression }) {
    return await get(tab).evaluate(expression);
  },
  // Element actions wait for a visible element, then act on it. (puppeteer's
  // locators also wait for a stable box over animation frames, which timed
  // out now and then for a window not in front.)
  async click({ tab, selector, timeout }) {
    await withElement(get(tab), selector, timeout, (element) => element.click());
  },
  async fill({ tab, selector, text, timeout }) {
    await withElement(get(tab), selector, timeout, async (element) => {
      await element.evaluate((node) => { node.value = ""; });
      await element.type(text);
    });
  },
  async press({ tab, selector, key, timeout }) {
    await withElement(get(tab), selector, timeout, (element) => element.press(key));
  },
  async errors({ tab }) {
    return [...errors.get(get(tab))];
  },
  async screenshot({ tab, path }) {
    await get(tab).screenshot({ path, fullPage: true });
  },
  async closeTab({ tab }) {
    const page = get(tab);
    objects.delete(tab);
    await page.close();
  },
};

const lines = readline.createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on("line", (line) => {
  queue = queue.then(async () => {
    let id = null;
    try {
      const { id: commandId, cmd, ...args } = JSON.parse(line);
      id = commandId;
      const handler = commands[cmd];
      if (!handler) throw new Error(`unknown command ${cmd}`);
      const value = await handler(args);
      write({ id, value: value === undefined ? null : value });
    } catch (error) {
      write({ id, error: String(error && error.stack || error) });
    }
  });
});
lines.on("close", () => {
  queue.then(() => browser.close()).finally(() => process.exit(0));
});
