'use strict';
/**
 * flask_athena presence in the browser: keep a list of who is in a topic from
 * a snapshot (`athena.presence.list(topic)` sent by the server) and the diffs
 * that follow (the `joins` and `leaves` of the server's `presence_changed`
 * hook). Phoenix Presence's JS helper is the model. No DOM, no dependencies.
 *
 * A presence table maps each key (a user) to its metas, oldest first; each
 * meta carries a unique `ref` (one per tab, or per tracking). The semantics
 * are those of `flask_athena.presence.sync_diff` / `sync_state` on the
 * server (tests/js/presence_vectors.json holds the cases both must pass):
 * a join adds the metas whose ref the key lacks, a leave removes metas by
 * ref, a key with no metas is gone; applying a diff twice, or a leave of
 * something absent, changes nothing, so a snapshot and the diffs that
 * overlap it combine safely.
 *
 * Imported as "athena/presence" (the page's import map has it):
 *
 *     import { PresenceList } from "athena/presence";
 *     this.people = new PresenceList({
 *       onJoin: (key, before, joined) => { if (!before) announce(`${key} joined`); },
 *       onLeave: (key, after, left) => { if (!after) announce(`${key} left`); },
 *       onSync: (list) => render(list.keys()),
 *     });
 *     // server → browser calls:
 *     presence_state(table) { this.people.setState(table); }
 *     presence_diff(joins, leaves) { this.people.applyDiff(joins, leaves); }
 *
 * @module athena/presence
 */

/**
 * One tracking's details: what the server passed to `track` plus its `ref`.
 * @typedef {{ref: string, [field: string]: unknown}} Meta
 */
/**
 * key → its metas, oldest first.
 * @typedef {Object<string, Meta[]>} PresenceTable
 */
/**
 * Called for each key that gained metas: `before` is undefined when the key
 * was absent (it just joined).
 * @callback JoinCallback
 * @param {string} key
 * @param {Meta[] | undefined} before  the key's metas before the change
 * @param {Meta[]} joined  the metas that came
 * @returns {void}
 */
/**
 * Called for each key that lost metas: `after` is undefined when the key has
 * none left (it just left).
 * @callback LeaveCallback
 * @param {string} key
 * @param {Meta[] | undefined} after  the key's metas after the change
 * @param {Meta[]} left  the metas that went
 * @returns {void}
 */

/**
 * @param {object} object
 * @param {string} key
 * @returns {boolean}
 */
const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);
// Tables are objects without a prototype: a user named "__proto__" is a key
// like any other, never a prototype change.
/** @returns {PresenceTable} */
const emptyTable = () => Object.create(null);

/**
 * Apply a diff to a table; return the new table (`state` is not modified).
 * @param {PresenceTable} state
 * @param {PresenceTable} joins
 * @param {PresenceTable} leaves
 * @param {JoinCallback} [onJoin]
 * @param {LeaveCallback} [onLeave]
 * @returns {PresenceTable}
 */
export function syncDiff(state, joins, leaves, onJoin, onLeave) {
  const result = emptyTable();
  for (const key of Object.keys(state)) result[key] = state[key].slice();
  for (const key of Object.keys(joins || {})) {
    const before = hasOwn(result, key) && result[key].length ? result[key].slice() : undefined;
    const current = hasOwn(result, key) ? result[key] : (result[key] = []);
    const refs = new Set(current.map((meta) => meta.ref));
    const added = joins[key].filter((meta) => !refs.has(meta.ref));
    current.push(...added);
    if (!current.length) delete result[key];
    if (added.length && onJoin) onJoin(key, before, added);
  }
  for (const key of Object.keys(leaves || {})) {
    if (!hasOwn(result, key)) continue;
    const gone = new Set(leaves[key].map((meta) => meta.ref));
    const left = result[key].filter((meta) => gone.has(meta.ref));
    const kept = result[key].filter((meta) => !gone.has(meta.ref));
    if (kept.length) result[key] = kept;
    else delete result[key];
    if (left.length && onLeave) onLeave(key, kept.length ? kept : undefined, left);
  }
  return result;
}

/**
 * The diff from `state` to a newer snapshot `newState`.
 * @param {PresenceTable} state
 * @param {PresenceTable} newState
 * @returns {{joins: PresenceTable, leaves: PresenceTable}}
 */
export function syncState(state, newState) {
  const joins = emptyTable();
  const leaves = emptyTable();
  for (const key of Object.keys(newState)) {
    const refs = new Set((hasOwn(state, key) ? state[key] : []).map((meta) => meta.ref));
    const added = newState[key].filter((meta) => !refs.has(meta.ref));
    if (added.length) joins[key] = added;
  }
  for (const key of Object.keys(state)) {
    const refs = new Set((hasOwn(newState, key) ? newState[key] : []).map((meta) => meta.ref));
    const removed = state[key].filter((meta) => !refs.has(meta.ref));
    if (removed.length) leaves[key] = removed;
  }
  return { joins, leaves };
}

/** A presence table kept in sync from a snapshot and diffs, with callbacks. */
export class PresenceList {
  /**
   * @param {{onJoin?: JoinCallback, onLeave?: LeaveCallback,
   *          onSync?: (list: PresenceList) => void}} [callbacks]
   */
  constructor(callbacks = {}) {
    /** @type {PresenceTable} */
    this.state = emptyTable();
    this.onJoin = callbacks.onJoin;
    this.onLeave = callbacks.onLeave;
    this.onSync = callbacks.onSync;
  }

  /**
   * Take a snapshot (`athena.presence.list(topic)`): the callbacks hear who
   * came and went since the table this list had.
   * @param {PresenceTable} table
   */
  setState(table) {
    const { joins, leaves } = syncState(this.state, table);
    this.applyDiff(joins, leaves);
  }

  /**
   * Apply one diff (`presence_changed`'s `joins` and `leaves`).
   * @param {PresenceTable} joins
   * @param {PresenceTable} leaves
   */
  applyDiff(joins, leaves) {
    this.state = syncDiff(this.state, joins, leaves, this.onJoin, this.onLeave);
    if (this.onSync) this.onSync(this);
  }

  /**
   * Every key present, in the order given by `compare` (default: as the
   * server lists them).
   * @param {(a: string, b: string) => number} [compare]
   * @returns {string[]}
   */
  keys(compare) {
    const keys = Object.keys(this.state);
    return compare ? keys.sort(compare) : keys;
  }

  /**
   * The metas of `key` (an empty array when absent).
   * @param {string} key
   * @returns {Meta[]}
   */
  get(key) {
    return hasOwn(this.state, key) ? this.state[key].slice() : [];
  }

  /**
   * `chooser(key, metas)` for every key, like Phoenix's `Presence.list`.
   * @template T
   * @param {(key: string, metas: Meta[]) => T} chooser
   * @returns {T[]}
   */
  map(chooser) {
    return Object.keys(this.state).map((key) => chooser(key, this.state[key].slice()));
  }
}
