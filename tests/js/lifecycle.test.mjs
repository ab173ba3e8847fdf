// Gone, the reload and its loop guard, pagehide / pageshow, a page without config.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ConnectionLost, Runtime, readConfig } from "../../flask_athena/static/athena.js";
import { fakeEnv, pageConfig, settle, startedRuntime } from "./fakes.mjs";

test("gone: pending calls fail with ConnectionLost, the page stops, one jittered reload", async () => {
  const { env, rt, fetch, clock } = await startedRuntime();
  const inflight = rt.callRemote(1, "a", [], {}, {});
  await settle();
  const queued = rt.callRemote(1, "b", [], {}, {});
  env.stream.gone("page-expired");
  await assert.rejects(inflight, (e) => e instanceof ConnectionLost && /page-expired/.test(e.message));
  await assert.rejects(queued, ConnectionLost);
  assert.ok(env.stream.closed);
  assert.equal(env.document.documentElement.attributes.get("data-athena-status"), "gone");
  assert.deepEqual(env.events("athena:gone").map((e) => e.detail), [{ reason: "page-expired" }]);
  await assert.rejects(rt.callRemote(1, "c", [], {}, {}), ConnectionLost);
  await clock.advance(899); // random 0.5: 300 + 0.5 × 1200
  assert.equal(env.location.reloads, 0);
  await clock.advance(1);
  assert.equal(env.location.reloads, 1);
  await clock.advance(60_000);
  assert.equal(env.location.reloads, 1);
  assert.equal(fetch.requests.length, 1);
  assert.equal(env.EventSource.instances.length, 1, "a gone page reconnected");
});

test("gone from a POST: 410 or page-not-found", async () => {
  for (const [status, body] of [[410, {}], [404, { error: { code: "page-not-found" } }]]) {
    const { env, rt, fetch } = await startedRuntime();
    const call = rt.callRemote(1, "a", [], {}, {});
    await settle();
    fetch.requests[0].respond(status, body);
    await assert.rejects(call, ConnectionLost);
    assert.equal(rt.status, "gone", `status ${status}`);
    assert.equal(env.events("athena:gone").length, 1);
  }
});

test("reload loop guard: at most 3 automatic reloads a minute per tab", async () => {
  const storage = new Map();
  const reloadsAfterGone = async () => {
    const env = fakeEnv();
    env.sessionStorage.items = storage;
    env.sessionStorage.getItem = (key) => storage.get(key) ?? null;
    env.sessionStorage.setItem = (key, value) => storage.set(key, value);
    env.clock.nowMs = 1_700_000_000_000 + (Number(storage.get("clock")) || 0);
    const rt = new Runtime(env, pageConfig());
    await rt.start();
    env.stream.gone("server-restarted");
    await env.clock.advance(2000);
    storage.set("clock", String((Number(storage.get("clock")) || 0) + 2000));
    return env.location.reloads;
  };
  assert.deepEqual([await reloadsAfterGone(), await reloadsAfterGone(), await reloadsAfterGone()], [1, 1, 1]);
  assert.equal(await reloadsAfterGone(), 0, "a fourth reload within a minute: the loop guard failed");
  storage.set("clock", String(Number(storage.get("clock")) + 60_000));
  assert.equal(await reloadsAfterGone(), 1, "the guard forgets reloads older than a minute");
});

test("gone without storage: no automatic reload (no guard), the banner's button stays", async () => {
  const env = fakeEnv();
  env.storage = () => { throw new DOMException("blocked", "SecurityError"); };
  const rt = new Runtime(env, pageConfig());
  await rt.start();
  env.stream.gone("gone");
  await env.clock.advance(5000);
  assert.equal(env.location.reloads, 0);
});

test("athena:gone prevented: no reload", async () => {
  const { env, clock } = await startedRuntime();
  env.document.addEventListener("athena:gone", (event) => event.preventDefault());
  env.stream.gone("gone");
  await clock.advance(5000);
  assert.equal(env.location.reloads, 0);
});

test("pagehide: the page is closed with a beacon carrying its token, the stream closed", async () => {
  const { env, clock } = await startedRuntime();
  env.fire("pagehide", { persisted: false });
  assert.equal(env.beacons.length, 1);
  assert.equal(env.beacons[0].url, "/_athena/p1/close");
  assert.deepEqual(JSON.parse(await env.beacons[0].data.text()), { token: "t1" });
  assert.ok(env.stream.closed);
  await clock.advance(60_000);
  assert.equal(env.EventSource.instances.length, 1, "reconnected while unloading");
  assert.equal(env.events("athena:disconnected").length, 0);
});

test("pagehide: the beacon goes first, before the stream is closed", async () => {
  // Firefox may stop a closing tab's pagehide listener part-way through.
  const { env } = await startedRuntime();
  let streamClosedAtBeacon;
  env.navigator.sendBeacon = () => { streamClosedAtBeacon = env.stream.closed; return true; };
  env.fire("pagehide", { persisted: false });
  assert.equal(streamClosedAtBeacon, false);
});

test("pagehide: a listener stopped before its beacon is made good by the second, never twice", async () => {
  // Firefox stops a closing tab's first pagehide listener part-way through
  // now and then; the listeners after it run. Stopped at sendBeacon:
  const { env } = await startedRuntime();
  const send = env.navigator.sendBeacon;
  let calls = 0;
  env.navigator.sendBeacon = (url, data) => {
    calls += 1;
    if (calls === 1) throw new Error("listener stopped");
    return send(url, data);
  };
  env.fire("pagehide", { persisted: false });
  assert.equal(env.listenerErrors.length, 1);
  assert.equal(env.beacons.length, 1);
  assert.deepEqual(JSON.parse(await env.beacons[0].data.text()), { token: "t1" });
  assert.ok(env.stream.closed);
});

test("pagehide without sendBeacon: a keepalive fetch", async () => {
  const { env, fetch } = await startedRuntime();
  env.navigator.sendBeacon = undefined;
  env.fire("pagehide", { persisted: false });
  assert.equal(fetch.requests.length, 1);
  assert.equal(fetch.requests[0].url, "/_athena/p1/close");
  assert.equal(fetch.requests[0].init.keepalive, true);
});

test("back/forward cache: no beacon; pageshow reopens the stream from the last id", async () => {
  const { env, rt } = await startedRuntime();
  rt.globalFunctions.set("got", () => {});
  env.stream.message(1, { type: "call", widget: null, method: "got", args: [] });
  env.fire("pagehide", { persisted: true });
  assert.equal(env.beacons.length, 0);
  const frozen = env.stream;
  assert.ok(frozen.closed);
  env.fire("pageshow", { persisted: true });
  assert.notEqual(env.stream, frozen);
  assert.equal(env.stream.url.searchParams.get("last"), "1");
  assert.equal(rt.status, "connecting");
});

test("no config: the runtime stays inert and calls fail with ConnectionLost", async () => {
  const env = fakeEnv();
  const rt = new Runtime(env, readConfig(env.document));
  await rt.start();
  assert.equal(env.EventSource.instances.length, 0);
  assert.equal(rt.status, "idle");
  await assert.rejects(rt.callRemote(1, "x", [], {}, {}), ConnectionLost);
});

test("readConfig: fills defaults, refuses a config without its endpoints", () => {
  const meta = (content) => ({ querySelector: () => ({ getAttribute: () => content }) });
  const config = readConfig(meta(JSON.stringify({ page: "p", token: "t", events: "e", calls: "c", close: "x" })));
  assert.deepEqual(config, {
    page: "p", token: "t", events: "e", calls: "c", close: "x",
    heartbeatMs: 15000, callTimeoutMs: 30000, ackEvery: 256, debug: false,
  });
  const logged = console.error;
  console.error = () => {};
  try {
    assert.equal(readConfig(meta(JSON.stringify({ page: "p" }))), null);
    assert.equal(readConfig(meta("{not json")), null);
  } finally {
    console.error = logged;
  }
});
