// athena/presence (flask_athena/static/athena-presence.js): a list kept from a
// snapshot plus diffs, with the same answers as flask_athena.presence on the
// server (the shared cases in presence_vectors.json).

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { PresenceList, syncDiff, syncState } from "../../flask_athena/static/athena-presence.js";

// Tables have no prototype; compare their contents with plain objects.
const plain = (table) => ({ ...table });

const vectors = JSON.parse(readFileSync(new URL("./presence_vectors.json", import.meta.url), "utf8"));

for (const c of vectors.cases) {
  test(`shared case: ${c.name}`, () => {
    const before = structuredClone(c.state);
    if (c.diff) {
      assert.deepEqual(plain(syncDiff(c.state, c.diff.joins, c.diff.leaves)), c.expect);
    } else {
      const { joins, leaves } = syncState(c.state, c.new_state);
      assert.deepEqual({ joins: plain(joins), leaves: plain(leaves) }, c.expect);
    }
    assert.deepEqual(c.state, before, "the table given is never modified");
  });
}

const meta = (ref, extra = {}) => ({ ref, ...extra });

test("callbacks say when a key arrives and when its last meta goes", () => {
  const events = [];
  const people = new PresenceList({
    onJoin: (key, before, joined) => events.push(["join", key, before && before.length, joined.map((m) => m.ref)]),
    onLeave: (key, after, left) => events.push(["leave", key, after && after.length, left.map((m) => m.ref)]),
    onSync: (list) => events.push(["sync", list.keys()]),
  });
  people.applyDiff({ alice: [meta("r1")] }, {});
  people.applyDiff({ alice: [meta("r2")] }, {});          // a second tab
  people.applyDiff({}, { alice: [meta("r1")] });          // one tab closes
  people.applyDiff({}, { alice: [meta("r2")] });          // the last one
  assert.deepEqual(events, [
    ["join", "alice", undefined, ["r1"]], ["sync", ["alice"]],
    ["join", "alice", 1, ["r2"]], ["sync", ["alice"]],
    ["leave", "alice", 1, ["r1"]], ["sync", ["alice"]],
    ["leave", "alice", undefined, ["r2"]], ["sync", []],
  ]);
});

test("a snapshot then overlapping diffs: each change counted once", () => {
  const joined = [];
  const people = new PresenceList({ onJoin: (key, before) => { if (!before) joined.push(key); } });
  people.setState({ alice: [meta("r1")], bob: [meta("r2")] });
  // The diff of bob's join was already in the snapshot: nothing happens.
  people.applyDiff({ bob: [meta("r2")] }, {});
  people.applyDiff({ carol: [meta("r3", { since: 5 })] }, { alice: [meta("r1")] });
  assert.deepEqual(joined, ["alice", "bob", "carol"]);
  assert.deepEqual(people.keys((a, b) => a.localeCompare(b)), ["bob", "carol"]);
  assert.deepEqual(people.get("carol"), [{ ref: "r3", since: 5 }]);
  assert.deepEqual(people.get("alice"), []);
  assert.deepEqual(people.map((key, metas) => `${key}:${metas.length}`), ["bob:1", "carol:1"]);
});

test("a newer snapshot (after a reconnect) reports who came and went meanwhile", () => {
  const events = [];
  const people = new PresenceList({
    onJoin: (key) => events.push(`+${key}`),
    onLeave: (key, after) => events.push(after ? `-${key}(tab)` : `-${key}`),
  });
  people.setState({ alice: [meta("r1"), meta("r2")], bob: [meta("r3")] });
  events.length = 0;
  people.setState({ alice: [meta("r2")], dave: [meta("r4")] });
  assert.deepEqual(events, ["+dave", "-alice(tab)", "-bob"]);
  assert.deepEqual(people.keys(), ["alice", "dave"]);
});

test("keys named like Object.prototype members are ordinary keys", () => {
  const people = new PresenceList();
  // As the server's JSON arrives: "__proto__" is an own key there.
  const joins = JSON.parse('{"constructor": [{"ref": "r1"}], "__proto__": [{"ref": "r2"}]}');
  people.applyDiff(joins, { toString: [meta("r3")] });
  assert.deepEqual(people.get("constructor"), [meta("r1")]);
  assert.deepEqual(people.get("__proto__"), [meta("r2")]);
  assert.deepEqual(people.get("toString"), []);
  assert.deepEqual(people.keys(), ["constructor", "__proto__"]);
  assert.equal(Object.getPrototypeOf(people.state), null);
});
