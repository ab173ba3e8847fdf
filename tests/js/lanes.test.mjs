// The two POST lanes: the calls lane (sequenced, one POST in flight, in
// order) and the control lane (results of server calls and acks, never
// behind the calls lane).

import assert from "node:assert/strict";
import { test } from "node:test";

import { RemoteError, TimeoutError } from "../../flask_athena/static/athena.js";
import { answerAll, drainControl, settle, startedRuntime } from "./fakes.mjs";

const callsOf = (request) => request.body.messages.map((m) => [m.seq, m.method]);

test("calls made in one task go in one POST, numbered in order", async () => {
  const { rt, fetch } = await startedRuntime();
  const answers = [rt.callRemote(1, "a", [], {}, {}), rt.callRemote(1, "b", [1], {}, {}), rt.callRemote(2, "c", [], { k: 2 }, {})];
  await settle();
  assert.equal(fetch.requests.length, 1);
  const [request] = fetch.requests;
  assert.equal(request.url, "/_athena/p1/calls");
  assert.equal(request.init.headers["X-Athena-Token"], "t1");
  assert.deepEqual(request.body.messages, [
    { seq: 1, type: "call", widget: 1, method: "a", args: [], kwargs: {} },
    { seq: 2, type: "call", widget: 1, method: "b", args: [1], kwargs: {} },
    { seq: 3, type: "call", widget: 2, method: "c", args: [], kwargs: { k: 2 } },
  ]);
  answerAll(request);
  assert.deepEqual(await Promise.all(answers), ["a", "b", "c"]);
});

test("one calls POST in flight: later calls wait for its answer, then go together", async () => {
  const { rt, fetch } = await startedRuntime();
  const first = rt.callRemote(1, "first", [], {}, {});
  await settle();
  const later = [rt.callRemote(1, "second", [], {}, {}), rt.callRemote(1, "third", [], {}, {})];
  await settle();
  assert.equal(fetch.requests.length, 1, "a second calls POST went out while the first was in flight");
  answerAll(fetch.requests[0]);
  assert.equal(await first, "first");
  await settle();
  assert.equal(fetch.requests.length, 2);
  assert.deepEqual(callsOf(fetch.requests[1]), [[2, "second"], [3, "third"]]);
  answerAll(fetch.requests[1]);
  assert.deepEqual(await Promise.all(later), ["second", "third"]);
});

test("arguments are captured when the call is made, not when it is sent", async () => {
  const { rt, fetch } = await startedRuntime();
  rt.callRemote(1, "block", [], {}, {});
  await settle();
  const list = [1];
  rt.callRemote(1, "send", [list], {}, {});
  list.push(2);
  answerAll(fetch.requests[0]);
  await settle();
  assert.deepEqual(fetch.requests[1].body.messages[0].args, [[1]]);
});

test("a server error rejects with RemoteError carrying the wire code", async () => {
  const { rt, fetch } = await startedRuntime();
  const call = rt.callRemote(1, "missing", [], {}, {});
  await settle();
  fetch.requests[0].respond(200, {
    results: [{ seq: 1, error: { code: "method-not-found", name: "MethodNotFound", message: "no such method" } }],
  });
  await assert.rejects(call, (error) => error instanceof RemoteError && error.code === "method-not-found"
    && error.remoteName === "MethodNotFound" && error.message === "no such method");
});

test("a 4xx without results rejects the batch and frees its seqs", async () => {
  const { rt, fetch } = await startedRuntime();
  const call = rt.callRemote(1, "x", [], {}, {});
  await settle();
  fetch.requests[0].respond(403, { error: { code: "forbidden", message: "bad token" } });
  await assert.rejects(call, (error) => error instanceof RemoteError && error.code === "forbidden");
  rt.callRemote(1, "y", [], {}, {});
  await settle();
  assert.deepEqual(callsOf(fetch.requests[1]), [[1, "y"]]);
});

test("409 gap: a batch the server never looked at is renumbered from `expected`", async () => {
  const { rt, fetch } = await startedRuntime();
  rt.nextSeq = 5; // as if seqs 3 and 4 were lost with a server restart's record
  const call = rt.callRemote(1, "x", [], {}, {});
  await settle();
  assert.deepEqual(callsOf(fetch.requests[0]), [[5, "x"]]);
  fetch.requests[0].respond(409, { error: { code: "sequence-gap", expected: 3 } });
  await settle();
  assert.deepEqual(callsOf(fetch.requests[1]), [[3, "x"]]);
  answerAll(fetch.requests[1]);
  assert.equal(await call, "x");
});

test("a server call's result goes out at once while a calls POST hangs", async () => {
  // An exposed method may wait for exactly this result: it must never queue
  // behind the calls lane (that would deadlock the page).
  const { env, rt, fetch } = await startedRuntime();
  rt.globalFunctions.set("confirm", (text) => `yes to ${text}`);
  rt.callRemote(1, "ask", [], {}, {});
  await settle();
  assert.equal(fetch.open().length, 1);
  env.stream.message(1, { type: "call", call: 7, widget: null, method: "confirm", args: ["delete"] });
  await settle();
  assert.equal(fetch.open().length, 2, "the result waited behind the calls POST");
  const control = fetch.requests[1];
  assert.deepEqual(control.body, { ack: 1, messages: [{ type: "result", call: 7, ok: "yes to delete" }] });
  control.respond(200, { results: [] });
});

test("server calls start in the order sent; a thrown error answers as an error", async () => {
  const { env, rt, fetch } = await startedRuntime();
  const started = [];
  rt.globalFunctions.set("log", (n) => { started.push(n); if (n === 2) throw new TypeError("bad two"); return n; });
  for (let id = 1; id <= 3; id++) env.stream.message(id, { type: "call", call: 10 + id, widget: null, method: "log", args: [id] });
  await settle();
  assert.deepEqual(started, [1, 2, 3]);
  const messages = await drainControl(fetch);
  assert.deepEqual(messages, [
    { type: "result", call: 11, ok: 1 },
    { type: "result", call: 12, error: { name: "TypeError", message: "bad two" } },
    { type: "result", call: 13, ok: 3 },
  ]);
});

test("an unknown method or widget rejects the server's call, never runs anything", async () => {
  const { env, fetch } = await startedRuntime();
  env.stream.message(1, { type: "call", call: 1, widget: null, method: "nope", args: [] });
  env.stream.message(2, { type: "call", call: 2, widget: 42, method: "hear", args: [] });
  const errors = (await drainControl(fetch)).map((m) => m.error.message);
  assert.deepEqual(errors, ['no global function "nope" is registered', "no widget 42 on this page"]);
});

test("control POSTs that fail are retried with the same results, in order", async () => {
  const { env, rt, fetch, clock } = await startedRuntime();
  rt.globalFunctions.set("f", (n) => n);
  env.stream.message(1, { type: "call", call: 1, widget: null, method: "f", args: [1] });
  await settle();
  fetch.requests[0].fail();
  await settle();
  env.stream.message(2, { type: "call", call: 2, widget: null, method: "f", args: [2] });
  await settle();
  assert.equal(fetch.open().length, 0, "a control POST went out during the backoff");
  await clock.advance(250);
  assert.deepEqual(fetch.requests[1].body.messages.map((m) => m.call), [1, 2]);
});

test("a call times out after its own timeout; a late answer is ignored", async () => {
  const { rt, fetch, clock } = await startedRuntime();
  const call = rt.callRemote(1, "slow", [], {}, { timeoutMs: 1000 });
  await settle();
  let outcome;
  call.then((v) => { outcome = v; }, (e) => { outcome = e; });
  await clock.advance(999);
  assert.equal(outcome, undefined);
  await clock.advance(1);
  assert.ok(outcome instanceof TimeoutError);
  answerAll(fetch.requests[0]);
  await settle();
  assert.ok(outcome instanceof TimeoutError);
});
