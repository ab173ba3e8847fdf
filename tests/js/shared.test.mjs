// The shared event stream (athena-shared.js): election over Web Locks, relay
// over BroadcastChannel, per-page ids through a leader change, one reconnect
// policy. Each "tab" is a real Runtime with a StreamHub; the browser's locks,
// channels and the leader's EventSource are fakes shared by the tabs.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Runtime } from "../../flask_athena/static/athena.js";
import { StreamHub, sharedSourceClass } from "../../flask_athena/static/athena-shared.js";
import { FakeClock, fakeEnv, fakeEventSourceClass, pageConfig, settle } from "./fakes.mjs";

/** BroadcastChannel over one in-memory bus: delivered asynchronously, never to the sender. */
function fakeChannels() {
  const open = new Set();
  class FakeChannel {
    constructor(name) { this.name = name; this.onmessage = null; this.closed = false; open.add(this); }
    postMessage(message) {
      if (this.closed) throw new DOMException("closed", "InvalidStateError");
      const data = structuredClone(message);
      for (const other of open) {
        if (other !== this && other.name === this.name) setImmediate(() => { if (!other.closed) other.onmessage?.({ data }); });
      }
    }
    close() { this.closed = true; open.delete(this); }
  }
  return FakeChannel;
}

/**
 * navigator.locks: exclusive, granted in request order; `steal` takes a held
 * lock at once (the holder's request rejects with AbortError, as the spec
 * says); crash() frees a lock as a dying tab does.
 */
function fakeLocks() {
  const queues = new Map();
  const held = new Map();
  const grant = (name, next) => {
    held.set(name, next);
    Promise.resolve(next.callback()).then(() => {
      if (held.get(name) === next) { held.delete(name); pump(name); }
      next.resolve();
    });
  };
  const pump = (name) => {
    if (held.has(name)) return;
    const next = (queues.get(name) ?? []).shift();
    if (next) grant(name, next);
  };
  return {
    held,
    request(name, options, callback) {
      return new Promise((resolve, reject) => {
        const entry = { callback, resolve };
        if (options.steal) {
          const holder = held.get(name);
          if (holder) holder.resolve = () => {};
          held.delete(name);
          holder?.reject(new DOMException("stolen", "AbortError"));
          grant(name, entry);
          return;
        }
        entry.reject = reject;
        if (!queues.has(name)) queues.set(name, []);
        queues.get(name).push(entry);
        options.signal?.addEventListener("abort", () => {
          const queue = queues.get(name);
          if (queue.includes(entry)) { queue.splice(queue.indexOf(entry), 1); reject(new DOMException("aborted", "AbortError")); }
        });
        pump(name);
      });
    },
    /** The holder's tab died: the browser frees its lock. */
    crash(name) { held.delete(name); pump(name); },
  };
}

/** A browser: tabs of one session sharing locks, channels, the clock and the EventSource class. */
function fakeBrowser() {
  const clock = new FakeClock();
  const EventSource = fakeEventSourceClass();
  const BroadcastChannel = fakeChannels();
  const locks = fakeLocks();
  const tabs = [];
  let pageCount = 0;
  const browser = {
    clock, EventSource, BroadcastChannel, locks, tabs,
    /** Opens a tab: its Runtime, its hub, its page p<n>. */
    async open() {
      pageCount += 1;
      const page = `p${pageCount}`;
      const env = fakeEnv();
      Object.assign(env, { setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout, now: clock.now, clock });
      const hub = new StreamHub({
        EventSource, BroadcastChannel, locks, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout,
        random: () => 0.5, now: clock.now, baseURI: env.document.baseURI,
      }, { channel: "athena:k", lock: "athena:k", events: "/_athena/events", heartbeatMs: 15000 });
      env.EventSource = sharedSourceClass(hub, page);
      const rt = new Runtime(env, pageConfig({
        page, events: `/_athena/${page}/events`, calls: `/_athena/${page}/calls`,
        shared: { events: "/_athena/events", key: "k" },
      }));
      const seen = [];
      rt.globalFunctions.set("hear", (text) => { seen.push(text); });
      const tab = { page, env, hub, rt, seen, closed: false };
      tabs.push(tab);
      hub.start();
      await rt.start();
      await clock.advance(100);
      return tab;
    },
    /** The leader's stream (the only EventSource not closed). */
    stream() {
      const open = EventSource.instances.filter((es) => !es.closed);
      assert.equal(open.length, 1, `${open.length} event streams open`);
      return open[0];
    },
    /** The pages the stream asks for, and from which id. */
    pagesOf(es) {
      return Object.fromEntries(es.url.searchParams.get("pages").split(",").map((p) => {
        const [page, last] = p.split(":");
        return [page, Number(last)];
      }));
    },
    leaders() { return tabs.filter((t) => t.hub.leading); },
  };
  return browser;
}

/** The server's side: a message for `page` with id `id` on the shared stream. */
function send(es, page, id, text) {
  es.emit("message", { lastEventId: String(id), data: `${page}\n${JSON.stringify({ type: "call", widget: null, method: "hear", args: [text] })}` });
}

test("the first tab leads; one stream carries every tab's page, each from its last id", async () => {
  const browser = fakeBrowser();
  const [a, b, c] = [await browser.open(), await browser.open(), await browser.open()];
  assert.deepEqual(browser.leaders(), [a]);
  const es = browser.stream();
  assert.equal(es.url.pathname, "/_athena/events");
  assert.deepEqual(browser.pagesOf(es), { p1: 0, p2: 0, p3: 0 });
  es.open();
  await settle();
  for (const tab of [a, b, c]) assert.equal(tab.rt.status, "connected", tab.page);
});

test("tabs opening together join one reopen of the stream", async () => {
  const browser = fakeBrowser();
  await browser.open();
  browser.stream().open();
  const before = browser.EventSource.instances.length;
  await Promise.all([browser.open(), browser.open(), browser.open()]);
  assert.equal(browser.EventSource.instances.length, before + 1);
  assert.deepEqual(browser.pagesOf(browser.stream()), { p1: 0, p2: 0, p3: 0, p4: 0 });
});

test("each page's messages reach its tab only, once, in order", async () => {
  const browser = fakeBrowser();
  const tabs = [await browser.open(), await browser.open(), await browser.open()];
  const es = browser.stream();
  es.open();
  for (let id = 1; id <= 5; id++) {
    for (const tab of tabs) send(es, tab.page, id, `${tab.page}-${id}`);
  }
  send(es, "p2", 3, "p2-3"); // a replay overlap: dropped by the tab
  await settle();
  for (const tab of tabs) {
    assert.deepEqual(tab.seen, [1, 2, 3, 4, 5].map((id) => `${tab.page}-${id}`));
    assert.equal(tab.rt.lastEventId, 5);
  }
});

test("the leader tab closes: the next takes over and replays, nothing lost or doubled", async () => {
  const browser = fakeBrowser();
  const [a, b, c] = [await browser.open(), await browser.open(), await browser.open()];
  let es = browser.stream();
  es.open();
  send(es, "p2", 1, "b1");
  send(es, "p3", 1, "c1");
  send(es, "p3", 2, "c2");
  await settle();
  a.env.fire("pagehide", { persisted: false });
  a.hub.stop();
  await browser.clock.advance(100);
  assert.deepEqual(browser.leaders(), [b]);
  es = browser.stream();
  assert.deepEqual(browser.pagesOf(es), { p2: 1, p3: 2 });
  es.open();
  send(es, "p3", 2, "c2"); // the server replays from the last id: an overlap at most
  send(es, "p2", 2, "b2");
  send(es, "p3", 3, "c3");
  await settle();
  assert.deepEqual(b.seen, ["b1", "b2"]);
  assert.deepEqual(c.seen, ["c1", "c2", "c3"]);
  assert.equal(c.rt.status, "connected");
});

test("the leader tab crashes (no goodbye): the lock passes on and the next leader replays", async () => {
  const browser = fakeBrowser();
  const [a, b, c] = [await browser.open(), await browser.open(), await browser.open()];
  let es = browser.stream();
  es.open();
  send(es, "p2", 1, "b1");
  await settle();
  // The crashed tab's channel and stream simply go silent.
  a.hub.channel.close();
  a.hub.leading = false;
  es.close();
  browser.locks.crash("athena:k");
  await browser.clock.advance(100);
  assert.deepEqual(browser.leaders(), [b]);
  es = browser.stream();
  assert.deepEqual(browser.pagesOf(es), { p2: 1, p3: 0 });
  es.open();
  send(es, "p2", 2, "b2");
  send(es, "p3", 1, "c1");
  await settle();
  assert.deepEqual(b.seen, ["b1", "b2"]);
  assert.deepEqual(c.seen, ["c1"]);
});

test("the shared stream fails: tabs wait (no streams of their own), the leader reconnects with backoff", async () => {
  const browser = fakeBrowser();
  const tabs = [await browser.open(), await browser.open()];
  let es = browser.stream();
  es.open();
  send(es, "p1", 1, "a1");
  send(es, "p2", 1, "b1");
  await settle();
  const count = browser.EventSource.instances.length;
  es.error(false);
  await settle();
  for (const tab of tabs) assert.equal(tab.rt.status, "disconnected");
  assert.ok(es.closed, "the failed stream was left to the browser's own retry");
  await browser.clock.advance(240);
  assert.equal(browser.EventSource.instances.length, count, "reconnected before the backoff");
  await browser.clock.advance(10);
  es = browser.stream();
  assert.equal(browser.EventSource.instances.length, count + 1);
  assert.deepEqual(browser.pagesOf(es), { p1: 1, p2: 1 });
  es.open();
  await settle();
  for (const tab of tabs) {
    assert.equal(tab.rt.status, "connected");
    assert.equal(tab.env.events("athena:reconnected").length, 1);
  }
});

test("repeated failures back off up to the cap", async () => {
  const browser = fakeBrowser();
  await browser.open();
  const delays = [];
  for (let i = 0; i < 7; i++) {
    const es = browser.stream();
    es.error(true);
    const since = browser.clock.now();
    while (browser.EventSource.instances.at(-1) === es) await browser.clock.advance(10);
    delays.push(browser.clock.now() - since);
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 5000, 5000, 5000]);
});

test("gone for one page: that tab is gone, the others go on", async () => {
  const browser = fakeBrowser();
  const [a, b] = [await browser.open(), await browser.open()];
  const es = browser.stream();
  es.open();
  es.emit("gone", { data: JSON.stringify({ page: "p2", reason: "closed" }) });
  send(es, "p1", 1, "a1");
  await settle();
  assert.equal(b.rt.status, "gone");
  assert.deepEqual(b.env.events("athena:gone").map((e) => e.detail), [{ reason: "closed" }]);
  assert.equal(a.rt.status, "connected");
  assert.deepEqual(a.seen, ["a1"]);
});

test("a tab that saw a gap asks again from its last id; the leader reopens for it", async () => {
  const browser = fakeBrowser();
  const [, b] = [await browser.open(), await browser.open()];
  let es = browser.stream();
  es.open();
  send(es, "p2", 1, "b1");
  send(es, "p2", 3, "b3"); // 2 was lost
  await browser.clock.advance(100);
  es = browser.stream();
  assert.equal(browser.pagesOf(es).p2, 1);
  es.open();
  send(es, "p2", 2, "b2");
  send(es, "p2", 3, "b3");
  await settle();
  assert.deepEqual(b.seen, ["b1", "b2", "b3"]);
});

test("back/forward cache: the leader gives up the lock; back again, its tab rejoins", async () => {
  const browser = fakeBrowser();
  const [a, b] = [await browser.open(), await browser.open()];
  let es = browser.stream();
  es.open();
  send(es, "p1", 1, "a1");
  await settle();
  a.env.fire("pagehide", { persisted: true });
  a.hub.stop();
  await browser.clock.advance(100);
  assert.deepEqual(browser.leaders(), [b]);
  es = browser.stream();
  assert.deepEqual(browser.pagesOf(es), { p2: 0 });
  es.open();
  a.hub.start();
  a.env.fire("pageshow", { persisted: true });
  await browser.clock.advance(100);
  es = browser.stream();
  assert.deepEqual(browser.pagesOf(es), { p1: 1, p2: 0 });
  es.open();
  send(es, "p1", 2, "a2");
  await settle();
  assert.deepEqual(a.seen, ["a1", "a2"]);
  assert.equal(a.rt.status, "connected");
});

test("an attach sent before any tab leads is sent again", async () => {
  // Tabs opening at the same moment: a tab's first attach may go out while
  // no tab holds the lock yet (nobody hears it).
  const browser = fakeBrowser();
  const a = await browser.open();
  const b = await browser.open();
  // Make b's page unknown to the leader, as if its attach was lost.
  a.hub.pages.delete("p2");
  b.hub.source.readyState = 0;
  await browser.clock.advance(600);
  assert.deepEqual(browser.pagesOf(browser.stream()), { p1: 0, p2: 0 });
});

test("heartbeats are relayed to every tab's watchdog", async () => {
  const browser = fakeBrowser();
  const tabs = [await browser.open(), await browser.open()];
  const es = browser.stream();
  es.open();
  for (let i = 0; i < 4; i++) {
    await browser.clock.advance(15_000);
    es.heartbeat();
  }
  await settle();
  assert.equal(browser.stream(), es);
  for (const tab of tabs) assert.equal(tab.rt.status, "connected");
});

test("a tab attaching while the stream is down waits for the backoff's retry", async () => {
  // The outage test counts connection attempts: none outside the policy.
  const browser = fakeBrowser();
  const [, b] = [await browser.open(), await browser.open()];
  const es = browser.stream();
  es.open();
  es.error(false);
  await settle();
  const count = browser.EventSource.instances.length;
  b.hub.source.close(); // b's own watchdog gave up: it attaches afresh
  b.rt.stream = null;
  b.rt.openStream();
  await browser.clock.advance(200);
  assert.equal(browser.EventSource.instances.length, count, "an attempt outside the backoff");
  await browser.clock.advance(50);
  assert.equal(browser.EventSource.instances.length, count + 1);
  assert.deepEqual(browser.pagesOf(browser.stream()), { p1: 0, p2: 0 });
});

test("a stale attach never lowers a page's id on the stream (the tab may have acked past it)", async () => {
  // Seen in Chromium under load: a tab's attach, sent before relays that
  // followed, reached the leader late; the stream reopened from the old id,
  // which the tab's own ack had already trimmed: gone (outbox-trimmed).
  const browser = fakeBrowser();
  const [a, b] = [await browser.open(), await browser.open()];
  const es = browser.stream();
  es.open();
  for (let id = 1; id <= 5; id++) send(es, "p2", id, `b${id}`);
  await settle();
  const count = browser.EventSource.instances.length;
  a.hub.onChannel({ t: "attach", page: "p2", last: 1 }); // as delivered late
  await browser.clock.advance(100);
  assert.equal(browser.EventSource.instances.length, count, "reopened for a stale attach");
  assert.equal(a.hub.pages.get("p2"), 5);
  assert.deepEqual(b.seen, ["b1", "b2", "b3", "b4", "b5"]);
});


test("a leader that falls silent is replaced; a late relay of its term is ignored; woken, it rejoins", async () => {
  // A tab can stop running without a freeze event (Firefox and WebKit fire
  // none; a paused or stuck tab): it keeps the lock and relays nothing.
  const browser = fakeBrowser();
  const [a, b, c] = [await browser.open(), await browser.open(), await browser.open()];
  const old = browser.stream();
  old.open();
  send(old, "p2", 1, "b1");
  send(old, "p3", 1, "c1");
  await settle();
  // a freezes: it hears nothing and none of its timers run.
  const { onmessage } = a.hub.channel;
  a.hub.channel.onmessage = null;
  browser.clock.clearTimeout(a.hub.watchdog);
  const awake = a.hub.env;
  a.hub.env = { ...awake, setTimeout: () => undefined, clearTimeout: () => {} };
  browser.clock.clearTimeout(a.rt.watchdog);
  const runtimeTimers = { setTimeout: a.env.setTimeout, clearTimeout: a.env.clearTimeout };
  Object.assign(a.env, { setTimeout: () => undefined, clearTimeout: () => {} });
  // No word from the leader for 2.5 heartbeats + slack (+ jitter): a tab steals the lock.
  await browser.clock.advance(15_000 * 2.5 + 10_000);
  assert.deepEqual(browser.leaders().filter((t) => t !== a), []);
  await browser.clock.advance(15_000);
  const leaders = browser.leaders().filter((t) => t !== a);
  assert.equal(leaders.length, 1);
  const es = browser.EventSource.instances.at(-1);
  assert.notEqual(es, old);
  // (The fake locks reject a's request at once, so a's attach went out
  // while it slept; a real frozen tab sends it when it wakes.)
  assert.deepEqual(browser.pagesOf(es), { p1: 0, p2: 1, p3: 1 });
  es.open();
  // The silent leader's stream still had a message; relayed late, with its
  // old term, nobody applies it (the new stream replays it in order).
  const stale = new browser.BroadcastChannel("athena:k");
  stale.postMessage({ t: "msg", page: "p2", id: "2", data: JSON.stringify({ type: "call", widget: null, method: "hear", args: ["stale"] }), term: a.hub.term });
  stale.close();
  await settle();
  send(es, "p2", 2, "b2");
  send(es, "p3", 2, "c2");
  await settle();
  assert.deepEqual(b.seen, ["b1", "b2"]);
  assert.deepEqual(c.seen, ["c1", "c2"]);
  // a wakes: its lock was taken, so it leads no more and asks the new leader for its page.
  a.hub.env = awake;
  Object.assign(a.env, runtimeTimers);
  a.hub.channel.onmessage = onmessage;
  assert.equal(a.hub.leading, false);
  a.hub.deposed(); // the lock's rejection, as a woken tab gets it: ask again from its last id
  await browser.clock.advance(100);
  const again = browser.EventSource.instances.at(-1);
  assert.deepEqual(browser.pagesOf(again), { p1: 0, p2: 2, p3: 2 });
  again.open();
  send(again, "p1", 1, "a1");
  send(again, "p2", 3, "b3");
  await settle();
  assert.deepEqual(a.seen, ["a1"]);
  assert.deepEqual(b.seen, ["b1", "b2", "b3"]);
  assert.equal(browser.leaders().length, 1);
  for (const tab of [a, b, c]) assert.equal(tab.rt.status, "connected", tab.page);
});
