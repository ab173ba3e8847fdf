/**
 * Apply a diff to a table; return the new table (`state` is not modified).
 * @param {PresenceTable} state
 * @param {PresenceTable} joins
 * @param {PresenceTable} leaves
 * @param {JoinCallback} [onJoin]
 * @param {LeaveCallback} [onLeave]
 * @returns {PresenceTable}
 */
export function syncDiff(state: PresenceTable, joins: PresenceTable, leaves: PresenceTable, onJoin?: JoinCallback, onLeave?: LeaveCallback): PresenceTable;
/**
 * The diff from `state` to a newer snapshot `newState`.
 * @param {PresenceTable} state
 * @param {PresenceTable} newState
 * @returns {{joins: PresenceTable, leaves: PresenceTable}}
 */
export function syncState(state: PresenceTable, newState: PresenceTable): {
    joins: PresenceTable;
    leaves: PresenceTable;
};
/** A presence table kept in sync from a snapshot and diffs, with callbacks. */
export class PresenceList {
    /**
     * @param {{onJoin?: JoinCallback, onLeave?: LeaveCallback,
     *          onSync?: (list: PresenceList) => void}} [callbacks]
     */
    constructor(callbacks?: {
        onJoin?: JoinCallback;
        onLeave?: LeaveCallback;
        onSync?: (list: PresenceList) => void;
    });
    /** @type {PresenceTable} */
    state: PresenceTable;
    onJoin: JoinCallback | undefined;
    onLeave: LeaveCallback | undefined;
    onSync: ((list: PresenceList) => void) | undefined;
    /**
     * Take a snapshot (`athena.presence.list(topic)`): the callbacks hear who
     * came and went since the table this list had.
     * @param {PresenceTable} table
     */
    setState(table: PresenceTable): void;
    /**
     * Apply one diff (`presence_changed`'s `joins` and `leaves`).
     * @param {PresenceTable} joins
     * @param {PresenceTable} leaves
     */
    applyDiff(joins: PresenceTable, leaves: PresenceTable): void;
    /**
     * Every key present, in the order given by `compare` (default: as the
     * server lists them).
     * @param {(a: string, b: string) => number} [compare]
     * @returns {string[]}
     */
    keys(compare?: (a: string, b: string) => number): string[];
    /**
     * The metas of `key` (an empty array when absent).
     * @param {string} key
     * @returns {Meta[]}
     */
    get(key: string): Meta[];
    /**
     * `chooser(key, metas)` for every key, like Phoenix's `Presence.list`.
     * @template T
     * @param {(key: string, metas: Meta[]) => T} chooser
     * @returns {T[]}
     */
    map<T>(chooser: (key: string, metas: Meta[]) => T): T[];
}
/**
 * One tracking's details: what the server passed to `track` plus its `ref`.
 */
export type Meta = {
    ref: string;
    [field: string]: unknown;
};
/**
 * key → its metas, oldest first.
 */
export type PresenceTable = {
    [x: string]: Meta[];
};
/**
 * Called for each key that gained metas: `before` is undefined when the key
 * was absent (it just joined).
 */
export type JoinCallback = (key: string, before: Meta[] | undefined, joined: Meta[]) => void;
/**
 * Called for each key that lost metas: `after` is undefined when the key has
 * none left (it just left).
 */
export type LeaveCallback = (key: string, after: Meta[] | undefined, left: Meta[]) => void;
