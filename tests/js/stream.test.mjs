// The event stream: ids and gaps, replay, acks, the watchdog and the
// reconnect policy.

import assert from "node:assert/strict";
import { test } from "node:test";

import { drainControl, settle, startedRuntime } from "./fakes.mjs";

/** A server → browser call of the registered global "got" with one argument. */
const got = (n) => ({ type: "call", widget: null, method: "got", args: [n] });

async function recordingRuntime(options) {
  const started = await startedRuntime(options);
  const seen = [];
  started.rt.globalFunctions.set("got", (n) => { seen.push(n); });
  return { ...started, seen };
}

test("the first stream asks for a replay from 0; messages are applied once, in order", async () => {
  const { env, seen } = await recordingRuntime();
  assert.equal(env.stream.url.pathname, "/_athena/p1/events");
  assert.equal(env.stream.url.searchParams.get("last"), "0");
  env.stream.message(1, got(1));
  env.stream.message(2, got(2));
  env.stream.message(2, got(2)); // replay overlap
  env.stream.message(1, got(1));
  env.stream.message(3, got(3));
  await settle();
  assert.deepEqual(seen, [1, 2, 3]);
});

test("an id gap closes the stream and reopens it from the last id received", async () => {
  const { env, errors, seen } = await recordingRuntime();
  const first = env.stream;
  first.message(1, got(1));
  first.message(2, got(2));
  first.message(4, got(4)); // 3 was lost
  await settle();
  assert.ok(first.closed);
  const second = env.stream;
  assert.notEqual(second, first);
  assert.equal(second.url.searchParams.get("last"), "2");
  second.open();
  second.message(3, got(3));
  second.message(4, got(4));
  await settle();
  assert.deepEqual(seen, [1, 2, 3, 4]);
  assert.deepEqual(errors, []);
});

test("a second gap in a row is reported and the message applied (no resync loop)", async () => {
  const { env, errors, seen } = await recordingRuntime();
  env.stream.message(1, got(1));
  env.stream.message(3, got(3));
  const second = env.stream;
  second.open();
  second.message(5, got(5)); // the replay has a gap too: the server lost 2..4
  await settle();
  assert.equal(env.stream, second, "resynced a second time");
  assert.deepEqual(seen, [1, 5]);
  assert.match(String(errors[0]), /events 2\.\.4 were lost/);
});

test("a message without a valid id is reported and not applied", async () => {
  const { env, errors, seen } = await recordingRuntime();
  env.stream.emit("message", { lastEventId: "", data: JSON.stringify(got(1)) });
  await settle();
  assert.deepEqual(seen, []);
  assert.match(String(errors[0]), /without a valid id/);
});

test("messages a replaced stream still delivers are ignored", async () => {
  const { env, seen } = await recordingRuntime();
  const old = env.stream;
  old.message(1, got(1));
  old.message(3, got(3)); // gap: replaced
  old.message(2, got(2));
  await settle();
  assert.deepEqual(seen, [1]);
});

test("acks: a standalone ack a few seconds after the first unacked message", async () => {
  const { env, fetch, clock } = await recordingRuntime();
  env.stream.message(1, got(1));
  env.stream.message(2, got(2));
  await settle();
  assert.equal(fetch.requests.length, 0);
  await clock.advance(4999);
  assert.equal(fetch.requests.length, 0);
  await clock.advance(1);
  assert.deepEqual(fetch.requests[0].body, { ack: 2, messages: [] });
});

test("acks: at once after ackEvery messages", async () => {
  const { env, fetch } = await recordingRuntime({ config: { ackEvery: 3 } });
  for (let id = 1; id <= 3; id++) env.stream.message(id, got(id));
  await settle();
  assert.deepEqual(fetch.requests[0].body, { ack: 3, messages: [] });
});

test("acks ride on a calls POST: no standalone ack after it", async () => {
  const { env, rt, fetch, clock } = await recordingRuntime();
  env.stream.message(1, got(1));
  rt.callRemote(1, "x", [], {}, {});
  await settle();
  assert.equal(fetch.requests[0].body.ack, 1);
  fetch.requests[0].respond(200, { results: [{ seq: 1, ok: null }] });
  await clock.advance(10_000);
  assert.equal(fetch.requests.length, 1);
});

test("the ack delay is jittered", async () => {
  for (const [random, delay] of [[0, 2500], [0.999999, 7500]]) {
    const { env, fetch, clock } = await recordingRuntime({ random: () => random });
    env.stream.message(1, got(1));
    await clock.advance(delay - 1);
    assert.equal(fetch.requests.length, 0);
    await clock.advance(1);
    assert.equal(fetch.requests.length, 1, `random ${random}`);
  }
});

test("status and events: connected, disconnected, reconnected", async () => {
  const { env, clock } = await startedRuntime();
  const status = () => env.document.documentElement.attributes.get("data-athena-status");
  assert.equal(status(), "connected");
  assert.equal(env.events("athena:connected").length, 1);
  env.stream.error(false);
  assert.equal(status(), "disconnected");
  assert.equal(env.events("athena:disconnected").length, 1);
  await clock.advance(250);
  env.stream.open();
  assert.equal(status(), "connected");
  assert.equal(env.events("athena:reconnected").length, 1);
  assert.equal(env.events("athena:connected").length, 1);
});

test("reconnect: one policy — a failing stream is closed, never left to the browser's own retry", async () => {
  // Firefox's native retry pace plus the runtime's made dozens of attempts
  // in a short outage; only the runtime's backoff may reconnect.
  const { env, clock } = await startedRuntime();
  const first = env.stream;
  first.error(false); // the browser would retry by itself (readyState CONNECTING)
  assert.ok(first.closed, "the failed EventSource was left to retry natively");
  await clock.advance(249);
  assert.equal(env.stream, first);
  await clock.advance(1);
  assert.notEqual(env.stream, first);
  assert.equal(env.EventSource.instances.filter((es) => !es.closed).length, 1);
});

test("reconnect: a stream the browser gave up on is reopened with backoff, jitter and a cap", async () => {
  const { env, clock } = await startedRuntime();
  const delays = [];
  for (let attempt = 0; attempt < 7; attempt++) {
    const before = env.stream;
    before.error(true); // non-200: the browser does not retry
    const since = clock.now();
    while (env.stream === before) await clock.advance(10);
    delays.push(clock.now() - since);
  }
  assert.deepEqual(delays, [250, 500, 1000, 2000, 5000, 5000, 5000]);
  env.stream.open();
  const before = env.stream;
  before.error(true);
  const since = clock.now();
  while (env.stream === before) await clock.advance(10);
  assert.equal(clock.now() - since, 250, "an open stream resets the backoff");
});

test("reconnect: the watchdog replaces a stream silent for 2.5 heartbeats; heartbeats keep it", async () => {
  const { env, clock } = await startedRuntime({ config: { heartbeatMs: 1000 } });
  const first = env.stream;
  for (let i = 0; i < 5; i++) {
    await clock.advance(2000);
    first.heartbeat();
  }
  assert.equal(env.stream, first);
  await clock.advance(2500);
  assert.ok(first.closed);
  assert.equal(env.events("athena:disconnected").length, 1);
  await clock.advance(250);
  assert.notEqual(env.stream, first);
});

test("reconnect: `online` skips the wait", async () => {
  const { env, clock } = await startedRuntime();
  const before = env.stream;
  before.error(true);
  await clock.advance(100);
  assert.equal(env.stream, before);
  env.fire("online");
  assert.notEqual(env.stream, before);
});

test("a reopened stream asks for the messages after the last one received", async () => {
  const { env, seen, clock } = await recordingRuntime();
  env.stream.message(1, got(1));
  env.stream.message(2, got(2));
  env.stream.error(true);
  await clock.advance(250);
  assert.equal(env.stream.url.searchParams.get("last"), "2");
  env.stream.open();
  env.stream.message(2, got(2));
  env.stream.message(3, got(3));
  await settle();
  assert.deepEqual(seen, [1, 2, 3]);
  await drainControl(env.fetch);
});
