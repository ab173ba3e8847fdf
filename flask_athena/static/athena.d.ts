/**
 * The JSON object of `<meta name="athena-config">`.
 */
export type AthenaConfig = {
    page: string;
    token: string;
    events: string;
    calls: string;
    close: string;
    heartbeatMs: number;
    callTimeoutMs: number;
    ackEvery: number;
    debug: boolean;
};
/**
 * A widget value: how a server LiveElement travels in args and results.
 */
export type WidgetInfo = {
    $athena: "widget";
    id: number;
    parent?: number | null;
    html: string;
};
/**
 * Per-call options for {@link Widget#callRemoteWithOptions}; `timeoutMs`
 * overrides the page's callTimeoutMs; `signal` cancels the call (see there).
 */
export type CallOptions = {
    timeoutMs?: number;
    signal?: AbortSignal;
};
/**
 * A sequenced message (call or detach) on the calls lane; `json` is the
 * message without seq, serialized at call time. `seq` stays 0 until the
 * message goes into a batch: numbering at send time lets a call that times out
 * unsent be dropped without leaving a gap.
 */
export type Outgoing = {
    json: string;
    seq: number;
    isDetach: boolean;
    timeoutMs: number;
    settled: boolean;
    timer: Timer;
    unlisten: (() => void) | undefined;
    resolve: (value: any) => void;
    reject: (error: unknown) => void;
};
export type Reply = {
    status: number;
    body: any;
};
export type Status = "idle" | "connecting" | "connected" | "disconnected" | "gone";
/**
 * A timer handle of {@link RuntimeEnv}'s setTimeout.
 */
export type Timer = unknown;
/**
 * What {@link RuntimeEnv} needs of an EventSource class: `new` and `CLOSED`.
 */
export type EventSourceClass = {
    new (url: string): EventSource;
    readonly CLOSED: number;
};
/**
 * Everything the runtime takes from its world. {@link browserEnv} gives the
 * browser's own; tests give fakes.
 */
export type RuntimeEnv = {
    fetch: (url: string, init: RequestInit) => Promise<Response>;
    EventSource: EventSourceClass;
    document: Document;
    /**
     *   receives pagehide, pageshow, online, unhandledrejection
     */
    window: {
        addEventListener: (type: string, listener: (event: any) => void) => void;
    };
    navigator: {
        sendBeacon?: (url: string, data: Blob) => boolean;
    };
    location: {
        reload: () => void;
    };
    /**
     * sessionStorage (for the reload loop guard); may throw
     */
    storage: () => Storage;
    setTimeout: (callback: () => void, ms: number) => Timer;
    clearTimeout: (handle: Timer) => void;
    /**
     * milliseconds since the epoch
     */
    now: () => number;
    /**
     * uniform in [0, 1)
     */
    random: () => number;
    /**
     * loads a widget module
     */
    importModule: (url: string) => Promise<any>;
};
/**
 * Base class of every JS widget. The runtime constructs subclasses as
 * `new Cls(node, ...initialArguments)`; a subclass calls `super(node)` first.
 */
export class Widget {
    /** The widget owning `node`: the nearest widget root at or above it. @param {Node|null} node @returns {Widget|null} */
    static get(node: Node | null): Widget | null;
    /** @param {HTMLElement} node the element carrying data-athena-widget */
    constructor(node: HTMLElement);
    /** The widget's root element. */
    node: HTMLElement;
    /** The server element's id (data-athena-widget). */
    widgetId: number;
    widgetParent: Widget | null;
    childWidgets: Widget[];
    /**
     * Calls an exposed method of the server element.
     * @param {string} method
     * @param {...any} args JSON-serializable, captured at call time
     * @returns {Promise<any>} its return value (LiveElements arrive as Widgets);
     *   rejects with RemoteError, TimeoutError or ConnectionLost
     */
    callRemote(method: string, ...args: any[]): Promise<any>;
    /** Calls an exposed method with keyword arguments. @param {string} method @param {Record<string, any>} kwargs @returns {Promise<any>} */
    callRemoteKw(method: string, kwargs: Record<string, any>): Promise<any>;
    /**
     * The general form: positional and keyword arguments and per-call options.
     * The timeout runs from now, also while the call waits offline; a call that
     * times out before it was sent is never sent.
     *
     * `options.signal` (an AbortSignal) cancels the call: the promise rejects
     * at once with `signal.reason`. A call not sent yet is dropped and never
     * runs; one already sent runs on the server exactly once (it cannot be
     * taken back) and its answer is ignored.
     * @param {string} method @param {any[]} [args] @param {Record<string, any>} [kwargs] @param {CallOptions} [options]
     * @returns {Promise<any>} as {@link Widget#callRemote}
     */
    callRemoteWithOptions(method: string, args?: any[], kwargs?: Record<string, any>, options?: CallOptions): Promise<any>;
    /**
     * Constructs a widget from a widget value (or adopts an already built
     * Widget) as a child of this one. The caller inserts `widget.node`.
     * @param {WidgetInfo|Widget} info @returns {Promise<Widget>}
     */
    addChildWidget(info: WidgetInfo | Widget): Promise<Widget>;
    /**
     * Detaches this widget on both sides: at once runs the detached() hooks
     * (children first), unregisters it and removes its node; tells the server.
     * @returns {Promise<void>} resolves when the server has acknowledged
     */
    detach(): Promise<void>;
    /** Hook: runs once every widget of the same render is constructed. */
    loaded(): void;
    /** Hook: runs when the widget is detached, after its children's hooks. */
    detached(): void;
}
/**
 * The page-level runtime.
 * @namespace
 */
export const Athena: Readonly<{
    /**
     * Registers a page-level function for the server's `page.call_remote(name, *args)`.
     * @param {string} name
     * @param {Function} fn may return a Promise; its value answers the server
     */
    registerGlobal(name: string, fn: Function): void;
    /**
     * The AbortSignal of the server → browser call being started now, for the
     * method the server called (a widget method or a registered global). Read
     * it synchronously, before the method's first `await`; elsewhere it is
     * `undefined`. It aborts when the server cancels the call
     * (`RemoteCall.cancel()`) or the page is gone; the method's result is then
     * not sent.
     * @returns {AbortSignal|undefined}
     */
    callSignal(): AbortSignal | undefined;
    /**
     * A frozen snapshot of the runtime, for tests and debugging.
     * @returns {{id: string|null, status: Status, lastEventId: number, nextSeq: number,
     *   queued: number, widgets: Map<number, Widget>}}
     */
    readonly page: {
        id: string | null;
        status: Status;
        lastEventId: number;
        nextSeq: number;
        queued: number;
        widgets: Map<number, Widget>;
    };
    /**
     * Connection state as in `<html data-athena-status>`, or "idle" with no page.
     * @returns {Status}
     */
    readonly connection: Status;
    /** Every live widget of the page, in construction order. @returns {Widget[]} */
    widgets(): Widget[];
}>;
/**
 * The JSON object of `<meta name="athena-config">`.
 * @typedef {{page: string, token: string, events: string, calls: string, close: string,
 *   heartbeatMs: number, callTimeoutMs: number, ackEvery: number, debug: boolean}} AthenaConfig
 */
/**
 * A widget value: how a server LiveElement travels in args and results.
 * @typedef {{$athena: "widget", id: number, parent?: number|null, html: string}} WidgetInfo
 */
/**
 * Per-call options for {@link Widget#callRemoteWithOptions}; `timeoutMs`
 * overrides the page's callTimeoutMs; `signal` cancels the call (see there).
 * @typedef {{timeoutMs?: number, signal?: AbortSignal}} CallOptions
 */
/**
 * A sequenced message (call or detach) on the calls lane; `json` is the
 * message without seq, serialized at call time. `seq` stays 0 until the
 * message goes into a batch: numbering at send time lets a call that times out
 * unsent be dropped without leaving a gap.
 * @typedef {{json: string, seq: number, isDetach: boolean, timeoutMs: number, settled: boolean,
 *   timer: Timer, unlisten: (() => void)|undefined,
 *   resolve: (value: any) => void, reject: (error: unknown) => void}} Outgoing
 */
/** @typedef {{status: number, body: any}} Reply */
/** @typedef {"idle"|"connecting"|"connected"|"disconnected"|"gone"} Status */
/** A timer handle of {@link RuntimeEnv}'s setTimeout. @typedef {unknown} Timer */
/**
 * What {@link RuntimeEnv} needs of an EventSource class: `new` and `CLOSED`.
 * @typedef {{new (url: string): EventSource, readonly CLOSED: number}} EventSourceClass
 */
/**
 * Everything the runtime takes from its world. {@link browserEnv} gives the
 * browser's own; tests give fakes.
 * @typedef {object} RuntimeEnv
 * @property {(url: string, init: RequestInit) => Promise<Response>} fetch
 * @property {EventSourceClass} EventSource
 * @property {Document} document
 * @property {{addEventListener: (type: string, listener: (event: any) => void) => void}} window
 *   receives pagehide, pageshow, online, unhandledrejection
 * @property {{sendBeacon?: (url: string, data: Blob) => boolean}} navigator
 * @property {{reload: () => void}} location
 * @property {() => Storage} storage sessionStorage (for the reload loop guard); may throw
 * @property {(callback: () => void, ms: number) => Timer} setTimeout
 * @property {(handle: Timer) => void} clearTimeout
 * @property {() => number} now milliseconds since the epoch
 * @property {() => number} random uniform in [0, 1)
 * @property {(url: string) => Promise<any>} importModule loads a widget module
 */
/** A browser → server call failed on the server, or the request was refused. */
export class RemoteError extends Error {
    /** @param {string} message @param {{code?: string, remoteName?: string}} [details] */
    constructor(message: string, details?: {
        code?: string;
        remoteName?: string;
    });
    /** Stable wire code: "method-not-found", "remote-error", "forbidden", ... */
    code: string;
    /** The error name the server reported (a Python class name in debug mode). */
    remoteName: string;
}
/** A call (or detach) got no answer within its timeout; a late answer is ignored. */
export class TimeoutError extends Error {
    /** @param {string} message */
    constructor(message: string);
    code: string;
}
/** The page is gone (closed, expired, server restarted) or the offline queue is full. */
export class ConnectionLost extends Error {
    /** @param {string} message */
    constructor(message: string);
    code: string;
}
/**
 * The runtime of one page: its widgets, its two POST lanes, its event stream
 * and its connection status. It touches the world only through its
 * {@link RuntimeEnv}, so everything below runs in Node with fakes.
 */
export class Runtime {
    /**
     * @param {RuntimeEnv} env the world: browserEnv() in a browser
     * @param {AthenaConfig|null} config null: no page on this document, stay inert
     */
    constructor(env: RuntimeEnv, config: AthenaConfig | null);
    /** @readonly */
    readonly env: RuntimeEnv;
    /** @readonly */
    readonly config: AthenaConfig | null;
    status: Status;
    everConnected: boolean;
    unloading: boolean;
    closeBeacon: Blob | null;
    closeSent: boolean;
    frozen: boolean;
    widgetsById: Map<number, Widget>;
    widgetsByNode: WeakMap<Node, Widget>;
    globalFunctions: Map<string, Function>;
    moduleLoads: Map<string, Promise<void>>;
    moduleResults: Map<string, {
        module?: any;
        error?: unknown;
    }>;
    nextSeq: number;
    callQueue: Outgoing[];
    inflight: Outgoing[] | null;
    callsFlushScheduled: boolean;
    gapResends: number;
    callsRetry: RetryTimer;
    controlQueue: string[];
    controlInflight: boolean;
    controlFlushScheduled: boolean;
    ackWanted: boolean;
    ackTimer: unknown;
    controlRetry: RetryTimer;
    stream: EventSource | null;
    lastEventId: number;
    ackedId: number;
    eventGapResyncs: number;
    inbox: Promise<void>;
    runningCalls: Map<number, AbortController>;
    currentCallSignal: AbortSignal | undefined;
    watchdog: unknown;
    streamRetry: RetryTimer;
    banner: HTMLElement | null;
    bannerTimer: unknown;
    /**
     * Listens to the window, constructs the document's widgets, opens the
     * event stream. Without a config it does nothing (a page with no LivePage).
     * @returns {Promise<void>}
     */
    start(): Promise<void>;
    /** Fires a cancelable `athena:error`; logs unless a listener prevented it. @param {unknown} error */
    reportError(error: unknown): void;
    /** @param {string} type @param {object} detail @param {boolean} [cancelable] @returns {boolean} false if prevented */
    dispatch(type: string, detail: object, cancelable?: boolean): boolean;
    /** The widget owning `node`: the nearest widget root at or above it. @param {Node|null} node @returns {Widget|null} */
    widgetOf(node: Node | null): Widget | null;
    /** @param {Node} node */
    forgetNode(node: Node): void;
    /** Local half of a detach (either side's): hooks children first, unregister, remove. @param {Widget} widget */
    teardown(widget: Widget): void;
    /** @param {Element} node */
    moduleUrl(node: Element): string;
    /** Imports the modules of `nodes` in parallel; never rejects (failures are reported per widget). @param {Element[]} nodes */
    loadModules(nodes: Element[]): Promise<void[]>;
    /** @param {Element} node whose module is loaded @returns {new (node: HTMLElement, ...args: any[]) => Widget} */
    resolveClass(node: Element): new (node: HTMLElement, ...args: any[]) => Widget;
    /**
     * Constructs the widgets of `nodes` (document order: parents first), links
     * them by DOM ancestry, then calls loaded() on each.
     * @param {HTMLElement[]} nodes their modules loaded
     * @param {Widget|null} rootParent parent of nodes[0] when no ancestor is a widget
     * @param {boolean} strict nodes[0] failing throws (a widget value) instead of being reported and skipped
     * @returns {Widget[]}
     */
    constructWidgets(nodes: HTMLElement[], rootParent: Widget | null, strict: boolean): Widget[];
    /**
     * Builds widget values into constructed Widgets, not yet in the document.
     * @param {{info: WidgetInfo, parent: Widget|null}[]} items @returns {Promise<Widget[]>}
     */
    buildWidgets(items: {
        info: WidgetInfo;
        parent: Widget | null;
    }[]): Promise<Widget[]>;
    /**
     * Replaces every widget value inside freshly parsed JSON by its Widget (in
     * place: the JSON is ours). Plain data costs one synchronous walk.
     * @param {any} value @returns {Promise<any>}
     */
    decodeValues(value: any): Promise<any>;
    /**
     * Queues a call of an exposed method of widget `widgetId` (see
     * {@link Widget#callRemoteWithOptions}).
     * @param {number} widgetId @param {string} method @param {any[]} args
     * @param {Record<string, any>} kwargs @param {CallOptions} options @returns {Promise<any>}
     */
    callRemote(widgetId: number, method: string, args: any[], kwargs: Record<string, any>, options: CallOptions): Promise<any>;
    /**
     * Queues a sequenced message; its timeout runs from now, also offline.
     * @param {object} message without seq @param {number} timeoutMs @param {boolean} isDetach
     * @param {AbortSignal} [signal] @returns {Promise<any>}
     */
    enqueue(message: object, timeoutMs: number, isDetach: boolean, signal?: AbortSignal): Promise<any>;
    /** @param {Outgoing} entry @param {() => void} action */
    settle(entry: Outgoing, action: () => void): void;
    scheduleCallsFlush(): void;
    flushCalls(): void;
    /** Sends (or re-sends, with the same seqs) a batch and handles the reply. @param {Outgoing[]} batch */
    postCalls(batch: Outgoing[]): Promise<void>;
    /** @param {Outgoing[]} batch @param {Reply|null} reply */
    rejectBatch(batch: Outgoing[], reply: Reply | null): void;
    /** @param {Outgoing[]} batch @param {any[]} results */
    applyCallResults(batch: Outgoing[], results: any[]): void;
    /**
     * One POST to the calls endpoint; null on network failure or timeout.
     * @param {string[]} messages serialized @param {number} timeoutMs @returns {Promise<Reply|null>}
     */
    post(messages: string[], timeoutMs: number): Promise<Reply | null>;
    scheduleControlFlush(): void;
    flushControl(): Promise<void>;
    /** Queues the answer to a server → browser call. @param {number|null} callId @param {{ok: any}|{error: unknown}} outcome */
    sendResult(callId: number | null, outcome: {
        ok: any;
    } | {
        error: unknown;
    }): void;
    /** A standalone ack when no other POST carries one soon: debounced, or at once after many. */
    maybeAck(): void;
    openStream(): void;
    closeStream(): void;
    /** Heartbeats exist because a dead connection is otherwise silent. */
    armWatchdog(): void;
    onStreamOpen(): void;
    /** @param {MessageEvent} event */
    onStreamMessage(event: MessageEvent): void;
    /** @param {any} message */
    applyMessage(message: any): Promise<void>;
    /** @param {any} message */
    applyCall(message: any): Promise<void>;
    /** @param {number|null} widgetId @param {string} method @returns {[Function, any]} */
    resolveTarget(widgetId: number | null, method: string): [Function, any];
    /** A method, not a comparison, so TypeScript does not narrow `status` across awaits. */
    isGone(): boolean;
    /** @param {Status} value */
    setStatus(value: Status): void;
    setDisconnected(): void;
    /** @param {"disconnected"|"gone"} state */
    showBanner(state: "disconnected" | "gone"): void;
    hideBanner(): void;
    /** Replay is impossible: fail all pending, stop, reload (jitter, loop guard) unless prevented. @param {string} reason */
    goGone(reason: string): void;
    /** Loop guard: at most RELOAD_GUARD_MAX automatic reloads per window, per tab. */
    reloadAllowed(): boolean;
    /**
     * The final pagehide (not one into the back/forward cache) sends the close
     * beacon, so the server frees the page at once rather than after
     * ATHENA_PAGE_TIMEOUT. When a tab is closed, Firefox may stop the first
     * pagehide listener part-way through (issue 16: with the stream closed
     * first, 2 closes in 3 sent no beacon; a beacon made of a Blob built in the
     * listener was still lost now and then), while the listeners after it run.
     * So the beacon's Blob is made in start(), sending it is the first thing
     * done here, and this runs from two listeners: the second sends the beacon
     * if the first was stopped before it could (a second close is answered 204
     * too) and finishes the rest, which is idempotent.
     * @param {PageTransitionEvent} event
     */
    onPageHide(event: PageTransitionEvent): void;
    /** Tells the server the page is closed (a beacon outlives the document). */
    sendCloseBeacon(): void;
    /** @param {PageTransitionEvent} event */
    onPageShow(event: PageTransitionEvent): void;
}
/** Runs `callback` after reconnectAfterMs(tries); reset() on success. */
export class RetryTimer {
    /**
     * @param {Pick<RuntimeEnv, "setTimeout"|"clearTimeout">} timers
     * @param {() => void} callback
     * @param {(tries: number) => number} [reconnectAfterMs]
     */
    constructor(timers: Pick<RuntimeEnv, "setTimeout" | "clearTimeout">, callback: () => void, reconnectAfterMs?: (tries: number) => number);
    timers: Pick<RuntimeEnv, "setTimeout" | "clearTimeout">;
    callback: () => void;
    reconnectAfterMs: (tries: number) => number;
    /** Retries scheduled since the last reset(). */
    tries: number;
    handle: unknown;
    /** A retry is scheduled and has not run yet. */
    get pending(): boolean;
    /** Forgets the tries and cancels a scheduled retry. */
    reset(): void;
    /** Schedules the next try, after a longer wait than the last. */
    schedule(): void;
    /** Skips the wait (the network came back). */
    fireNow(): void;
}
/**
 * Backoff with jitter and a cap: an outage never meets a retry storm.
 * @param {number} tries from 1 @param {() => number} [random] uniform in [0, 1)
 * @returns {number} milliseconds to wait before try `tries`
 */
export function backoffMs(tries: number, random?: () => number): number;
/**
 * The browser's own world, for the Runtime of this document.
 * @returns {RuntimeEnv}
 */
export function browserEnv(): RuntimeEnv;
/**
 * The page's config from `<meta name="athena-config">`, or null (none, or bad: logged).
 * @param {Pick<Document, "querySelector">} document @returns {AthenaConfig|null}
 */
export function readConfig(document: Pick<Document, "querySelector">): AthenaConfig | null;
