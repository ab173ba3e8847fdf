// Retries: backoff with jitter and a cap, the same seqs on a lost answer,
// offline calls that keep their timeouts.

import assert from "node:assert/strict";
import { test } from "node:test";

import { RetryTimer, TimeoutError, backoffMs } from "../../flask_athena/static/athena.js";
import { FakeClock, answerAll, settle, startedRuntime } from "./fakes.mjs";

test("backoffMs: steps up to a cap, jittered by ±30 %", () => {
  const steps = [1, 2, 3, 4, 5, 6, 50].map((tries) => backoffMs(tries, () => 0.5));
  assert.deepEqual(steps, [250, 500, 1000, 2000, 5000, 5000, 5000]);
  assert.equal(backoffMs(1, () => 0), 175);
  assert.equal(backoffMs(5, () => 0.999999), 6500);
  for (let i = 0; i < 200; i++) {
    const ms = backoffMs(4);
    assert.ok(ms >= 1400 && ms <= 2600, `${ms}`);
  }
});

test("RetryTimer: each schedule waits longer; reset starts over; fireNow skips the wait", async () => {
  const clock = new FakeClock();
  let runs = 0;
  const timer = new RetryTimer(clock, () => { runs += 1; }, (tries) => tries * 100);
  timer.schedule();
  timer.schedule(); // replaces the first: one pending at a time
  assert.deepEqual(clock.pendingDelays(), [200]);
  await clock.advance(200);
  assert.equal(runs, 1);
  assert.equal(timer.pending, false);
  timer.reset();
  timer.schedule();
  assert.deepEqual(clock.pendingDelays(), [100]);
  timer.fireNow();
  assert.equal(runs, 2);
  assert.deepEqual(clock.pendingDelays(), []);
  timer.fireNow(); // nothing pending: nothing runs
  assert.equal(runs, 2);
});

test("a calls POST whose answer is lost is sent again with the same seqs, after backoff", async () => {
  const { rt, fetch, clock } = await startedRuntime();
  const call = rt.callRemote(1, "once", [], {}, {});
  await settle();
  fetch.requests[0].fail();
  await settle();
  rt.callRemote(1, "later", [], {}, {});
  await clock.advance(249);
  assert.equal(fetch.requests.length, 1, "retried before the backoff");
  await clock.advance(1);
  assert.equal(fetch.requests.length, 2);
  assert.deepEqual(fetch.requests[1].body.messages, fetch.requests[0].body.messages,
    "the retry is not the same batch (later calls must wait for it)");
  fetch.requests[1].respond(503, undefined); // a proxy's 5xx: retry again
  await clock.advance(499);
  assert.equal(fetch.requests.length, 2);
  await clock.advance(1);
  answerAll(fetch.requests[2]);
  assert.equal(await call, "once");
  await settle();
  assert.deepEqual(fetch.requests[3].body.messages.map((m) => [m.seq, m.method]), [[2, "later"]]);
});

test("retry statuses: 408, 425 and 429 are retried, other 4xx are not", async () => {
  for (const status of [408, 425, 429]) {
    const { rt, fetch, clock } = await startedRuntime();
    rt.callRemote(1, "x", [], {}, {});
    await settle();
    fetch.requests[0].respond(status, { error: { code: "later" } });
    await clock.advance(250);
    assert.equal(fetch.requests.length, 2, `status ${status}`);
  }
  const { rt, fetch, clock } = await startedRuntime();
  const call = rt.callRemote(1, "x", [], {}, {});
  await settle();
  fetch.requests[0].respond(400, { error: { code: "bad-request" } });
  await assert.rejects(call, (e) => e.code === "bad-request");
  await clock.advance(10_000);
  assert.equal(fetch.requests.length, 1);
});

test("a hung calls POST is aborted after the slowest call's timeout plus slack, then retried", async () => {
  const { rt, fetch, clock } = await startedRuntime();
  const call = rt.callRemote(1, "x", [], {}, { timeoutMs: 60_000 });
  call.catch(() => {}); // times out at 60 s, before the POST is aborted
  await settle();
  await clock.advance(74_999);
  assert.ok(!fetch.requests[0].aborted);
  await clock.advance(1);
  assert.ok(fetch.requests[0].aborted);
  await clock.advance(250);
  assert.equal(fetch.requests.length, 2);
});

test("offline: queued calls keep their own timeouts and an expired one is never sent", async () => {
  const { rt, fetch, clock } = await startedRuntime();
  const first = rt.callRemote(1, "first", [], {}, { timeoutMs: 20_000 });
  await settle();
  fetch.requests[0].fail(); // offline: the batch is retried with backoff
  const short = rt.callRemote(1, "short", [], {}, { timeoutMs: 3000 });
  const long = rt.callRemote(1, "long", [], {}, { timeoutMs: 60_000 });
  const failures = [];
  for (const [name, p] of [["first", first], ["short", short]]) p.catch((e) => failures.push([name, e]));
  for (let i = 1; i < 4; i++) {
    await clock.advance(5000);
    for (const request of fetch.open()) request.fail();
  }
  assert.deepEqual(failures.map(([name, e]) => [name, e instanceof TimeoutError]), [["short", true]]);
  await clock.advance(5000);
  assert.deepEqual(failures.map(([name]) => name), ["short", "first"]);
  // Back online: the first batch (seq 1, answered from the server's record
  // if it ran) goes once more, then "long" alone — "short" never leaves.
  const retry = fetch.open()[0] ?? (await clock.advance(5000), fetch.open()[0]);
  assert.deepEqual(retry.body.messages.map((m) => [m.seq, m.method]), [[1, "first"]]);
  answerAll(retry);
  await settle();
  const next = fetch.open()[0];
  assert.deepEqual(next.body.messages.map((m) => [m.seq, m.method]), [[2, "long"]]);
  answerAll(next);
  assert.equal(await long, "long");
});

test("an aborted call not sent yet is dropped without a gap in the seqs", async () => {
  const { rt, fetch } = await startedRuntime();
  rt.callRemote(1, "block", [], {}, {});
  await settle();
  const controller = new AbortController();
  const dropped = rt.callRemote(1, "dropped", [], {}, { signal: controller.signal });
  rt.callRemote(1, "kept", [], {}, {});
  controller.abort(new Error("user cancelled"));
  await assert.rejects(dropped, /user cancelled/);
  answerAll(fetch.requests[0]);
  await settle();
  assert.deepEqual(fetch.requests[1].body.messages.map((m) => [m.seq, m.method]), [[2, "kept"]]);
});

test("the offline queue is bounded", async () => {
  const { rt, fetch } = await startedRuntime();
  rt.callRemote(1, "block", [], {}, {});
  await settle();
  const calls = [];
  for (let i = 0; i < 1001; i++) calls.push(rt.callRemote(1, "q", [i], {}, {}));
  await assert.rejects(calls[1000], (e) => e.name === "ConnectionLost" && /more than 1000/.test(e.message));
  assert.equal(fetch.requests.length, 1);
});
