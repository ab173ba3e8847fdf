/**
 * What the hub takes from its world; a browser gives its own, tests fakes.
 */
export type HubEnv = {
    EventSource: {
        new (url: string): EventSource;
        readonly CLOSED: number;
    };
    BroadcastChannel: {
        new (name: string): ChannelLike;
    };
    /**
     * navigator.locks
     */
    locks: LocksLike;
    setTimeout: (callback: () => void, ms: number) => unknown;
    clearTimeout: (handle: unknown) => void;
    /**
     * uniform in [0, 1)
     */
    random: () => number;
    /**
     * milliseconds since the epoch (a leader's term)
     */
    now: () => number;
    baseURI: string;
};
/**
 * What the hub needs of a BroadcastChannel.
 */
export type ChannelLike = {
    postMessage: (message: any) => void;
    close: () => void;
    onmessage: ((event: MessageEvent) => any) | null;
};
export type LocksLike = {
    request: (name: string, options: {
        signal?: AbortSignal;
        steal?: boolean;
    }, callback: () => Promise<void>) => Promise<void>;
};
/**
 * A message on the hub's BroadcastChannel; a leader's carry its `term`.
 */
export type HubMessage = ({
    t: "attach";
    page: string;
    last: number;
} | {
    t: "detach";
    page: string;
} | {
    t: "leader";
} | {
    t: "open";
    pages: string[];
} | {
    t: "msg";
    page: string;
    id: string;
    data: string;
} | {
    t: "hb";
} | {
    t: "gone";
    page: string;
    reason: string;
} | {
    t: "down";
} | {
    t: "alive";
}) & {
    term?: number;
};
/**
 * Options of a hub: its names (scoped to the session) and the shared endpoint.
 */
export type HubOptions = {
    channel: string;
    lock: string;
    events: string;
    heartbeatMs: number;
};
/**
 * One per tab. Every tab relays its own page's events to its source; the
 * leader also holds the shared EventSource and relays to the others.
 */
export class StreamHub {
    /** @param {HubEnv} env @param {HubOptions} options */
    constructor(env: HubEnv, options: HubOptions);
    env: HubEnv;
    options: HubOptions;
    /** @type {SharedSource|null} this tab's source */
    source: SharedSource | null;
    channel: ChannelLike | null;
    leading: boolean;
    stopped: boolean;
    /** @type {(() => void)|null} resolves the lock's callback: gives up the lock */
    releaseLock: (() => void) | null;
    /** @type {AbortController|null} cancels a lock request still waiting */
    lockWait: AbortController | null;
    attachTries: number;
    attachTimer: unknown;
    /** The newest leader's term heard (or this tab's own while it leads). */
    term: number;
    /** No word from the leader for this long: take the lock over. */
    takeoverMs: number;
    takeoverTimer: unknown;
    /** @type {Map<string, number>} */
    pages: Map<string, number>;
    /** @type {EventSource|null} */
    stream: EventSource | null;
    streamOpen: boolean;
    /** Pages the open stream carries (attached before it opened). */
    streamPages: Set<string>;
    reopenTimer: unknown;
    retryTimer: unknown;
    retryTries: number;
    watchdog: unknown;
    /** Joins the channel and the election. Idempotent. */
    start(): void;
    /**
     * Queues for the lock (or, `steal`, takes it from a silent holder); the
     * grant makes this tab the leader until it resigns or is deposed.
     * @param {boolean} steal
     */
    requestLock(steal: boolean): void;
    /**
     * Leaves the election and the channel (pagehide, freeze); a leader closes
     * its stream and gives up the lock, so another tab takes over at once.
     */
    stop(): void;
    /** A source of this tab opened: ask the leader for its page. @param {SharedSource} source */
    attach(source: SharedSource): void;
    /** @param {SharedSource} source */
    detach(source: SharedSource): void;
    /** Asks for the page; again, with backoff, until the leader's stream carries it. */
    sendAttach(): void;
    /** To every tab: over the channel, and to this tab's own source (a channel does not echo). @param {HubMessage} message */
    post(message: HubMessage): void;
    /** (Re)arms the follower's watch on the leader: silence past takeoverMs, and it takes over. */
    watchLeader(): void;
    /**
     * A message from the channel (or this tab's own).
     * @param {HubMessage} message @param {boolean} [own]
     */
    onChannel(message: HubMessage, own?: boolean): void;
    /** This tab got the lock. Every tab attaches again, with what it has. */
    lead(): void;
    /** Closes the stream and gives up the lock (the tabs' sources wait for the next leader). */
    resign(): void;
    /** Stops leading (the stream closed, timers cleared); the lock is not touched. */
    abdicate(): void;
    /**
     * Another tab took the lock over while this one was silent (frozen, stuck):
     * it leads now. Stop leading without a word (the new leader speaks), queue
     * for the lock again and ask the new leader for this tab's page.
     */
    deposed(): void;
    /** A tab's attach or detach, as the leader sees it. @param {HubMessage} message */
    onTabMessage(message: HubMessage): void;
    scheduleReopen(): void;
    /** Opens the shared stream for every attached page, each from its last id. */
    openStream(): void;
    streamFailed(): void;
    closeStream(): void;
    /** A stream silent for 2.5 heartbeats is dead (a dead connection is otherwise silent). */
    armWatchdog(): void;
}
/**
 * What a tab's Runtime uses instead of an EventSource: the events of its
 * page, relayed from the leader's stream. `reconnects` tells the Runtime that
 * a failure is the leader's to repair (it reconnects for every tab): the
 * Runtime waits instead of closing and reopening.
 */
export class SharedSource {
    static CONNECTING: number;
    static OPEN: number;
    static CLOSED: number;
    /** @param {StreamHub} hub @param {string} page @param {number} last id of the last message the page has */
    constructor(hub: StreamHub, page: string, last: number);
    hub: StreamHub;
    page: string;
    /** The last id delivered (the page's Last-Event-ID if it reattaches). */
    last: number;
    readyState: number;
    /** @type {Map<string, ((event: any) => void)[]>} */
    listeners: Map<string, ((event: any) => void)[]>;
    /** @param {string} type @param {(event: any) => void} listener */
    addEventListener(type: string, listener: (event: any) => void): void;
    /** Stops the relay to this source; the leader drops the page from its stream. */
    close(): void;
    /** @param {string} type @param {object} [fields] */
    emit(type: string, fields?: object): void;
}
/**
 * The EventSource class a Runtime gets in place of the browser's: each new
 * source attaches its page (the `last` query parameter of the URL the
 * Runtime builds) to the hub.
 * @param {StreamHub} hub @param {string} page
 * @returns {{new (url: string): EventSource, readonly CLOSED: number, readonly reconnects: boolean}}
 */
export function sharedSourceClass(hub: StreamHub, page: string): {
    new (url: string): EventSource;
    readonly CLOSED: number;
    readonly reconnects: boolean;
};
