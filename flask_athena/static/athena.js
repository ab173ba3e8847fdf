'use strict';
/**
 * flask_athena browser runtime: Nevow Athena "live elements" for Flask. One
 * no-build ES module, no dependencies; it implements docs/protocol.rst.
 *
 * Exports: Widget (base class of JS widgets), Athena (registerGlobal, callSignal,
 * page, connection, widgets), RemoteError, TimeoutError, ConnectionLost.
 * DOM events on `document`: athena:ready, athena:connected, athena:disconnected,
 * athena:reconnected, athena:gone (cancelable: no reload, no banner),
 * athena:error (cancelable: no console log). `<html data-athena-status>`:
 * connecting | connected | disconnected | gone.
 *
 * Two POST lanes share the calls endpoint. The *calls lane* carries sequenced
 * messages (call, detach), one POST in flight at a time, so the server sees
 * them in order without a reorder buffer. The *control lane* carries results
 * of server → browser calls and acks; it never waits behind the calls lane,
 * because an exposed method may be blocked waiting for exactly such a result.
 *
 * @module athena
 */

// ---- Constants -------------------------------------------------------------

const CONFIG_META_SELECTOR = 'meta[name="athena-config"]';
const WIDGET_SELECTOR = "[data-athena-widget]";
const DEFAULT_HEARTBEAT_MS = 15000;
const DEFAULT_CALL_TIMEOUT_MS = 30000;
const HEARTBEAT_TOLERANCE = 2.5;                      // heartbeats of silence = dead stream
const RETRY_STEPS_MS = [250, 500, 1000, 2000, 5000];  // every retry; the last step is the cap
const RETRY_JITTER = 0.3;                             // ±30 %
const RETRY_STATUSES = new Set([408, 425, 429]);      // 4xx that mean "try again later"
const MAX_QUEUED_MESSAGES = 1000;
const MAX_BATCH_MESSAGES = 100;
const MAX_BATCH_BYTES = 256 * 1024;
const CALLS_POST_SLACK_MS = 15000;                    // a calls POST may last as long as its slowest call + this
const CONTROL_POST_TIMEOUT_MS = 15000;
const MAX_GAP_RESENDS = 3;
const MAX_EVENT_GAP_RESYNCS = 1;
// Acks let the server trim the outbox; each one is a POST. A page acks after
// config.ackEvery messages (at most a quarter of the server's outbox) or a few
// seconds after the first unacked one, jittered so the pages that all received
// one broadcast do not ack in one burst.
const ACK_DELAY_MS = 5000;                            // ± ACK_DELAY_JITTER
const ACK_DELAY_JITTER = 0.5;
const ACK_EVERY_MESSAGES = 256;                       // when the config does not say
const BANNER_DELAY_MS = 1000;
const BANNER_DISCONNECTED_TEXT = "Connection lost. Reconnecting\u2026";
const BANNER_GONE_TEXT = "This page has expired.";
const BANNER_RELOAD_LABEL = "Reload";
const RELOAD_JITTER_MIN_MS = 300;
const RELOAD_JITTER_MAX_MS = 1500;
const RELOAD_GUARD_KEY = "athena:reloads";
const RELOAD_GUARD_WINDOW_MS = 60000;
const RELOAD_GUARD_MAX = 3;

// ---- Types -----------------------------------------------------------------

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
 *   timer: ReturnType<typeof setTimeout>|undefined, unlisten: (() => void)|undefined,
 *   resolve: (value: any) => void, reject: (error: unknown) => void}} Outgoing
 */
/** @typedef {{status: number, body: any}} Reply */
/** @typedef {"idle"|"connecting"|"connected"|"disconnected"|"gone"} Status */
/** @typedef {ReturnType<typeof setTimeout>|undefined} Timer */

// ---- Errors ----------------------------------------------------------------

/** A browser → server call failed on the server, or the request was refused. */
export class RemoteError extends Error {
  /** @param {string} message @param {{code?: string, remoteName?: string}} [details] */
  constructor(message, details = {}) {
    super(message);
    this.name = "RemoteError";
    /** Stable wire code: "method-not-found", "remote-error", "forbidden", ... */
    this.code = details.code ?? "remote-error";
    /** The error name the server reported (a Python class name in debug mode). */
    this.remoteName = details.remoteName ?? "RemoteError";
  }
}

/** A call (or detach) got no answer within its timeout; a late answer is ignored. */
export class TimeoutError extends Error {
  /** @param {string} message */
  constructor(message) { super(message); this.name = "TimeoutError"; this.code = "call-timeout"; }
}

/** The page is gone (closed, expired, server restarted) or the offline queue is full. */
export class ConnectionLost extends Error {
  /** @param {string} message */
  constructor(message) { super(message); this.name = "ConnectionLost"; this.code = "connection-lost"; }
}

// ---- Retry policy (phoenix's Timer) ----------------------------------------

/** Backoff with jitter and a cap: an outage never meets a retry storm. @param {number} tries from 1 */
function backoffMs(tries) {
  const base = RETRY_STEPS_MS[Math.min(tries, RETRY_STEPS_MS.length) - 1];
  return Math.round(base * (1 + RETRY_JITTER * (2 * Math.random() - 1)));
}

/** Runs `callback` after reconnectAfterMs(tries); reset() on success. */
class RetryTimer {
  /** @param {() => void} callback @param {(tries: number) => number} [reconnectAfterMs] */
  constructor(callback, reconnectAfterMs = backoffMs) {
    this.callback = callback;
    this.reconnectAfterMs = reconnectAfterMs;
    this.tries = 0;
    this.handle = /** @type {Timer} */ (undefined);
  }
  get pending() { return this.handle !== undefined; }
  reset() { this.tries = 0; clearTimeout(this.handle); this.handle = undefined; }
  schedule() {
    clearTimeout(this.handle);
    this.tries += 1;
    this.handle = setTimeout(() => { this.handle = undefined; this.callback(); }, this.reconnectAfterMs(this.tries));
  }
  /** Skips the wait (the network came back). */
  fireNow() {
    if (!this.pending) return;
    this.reset();
    this.callback();
  }
}

// ---- Runtime state (one page per document) ---------------------------------

let config = /** @type {AthenaConfig|null} */ (null);
let status = /** @type {Status} */ ("idle");
let everConnected = false;
let unloading = false;  // final pagehide: the stream closing then is no outage
let frozen = false;     // in the back/forward cache
const widgetsById = /** @type {Map<number, Widget>} */ (new Map());
const widgetsByNode = /** @type {WeakMap<Node, Widget>} */ (new WeakMap());
const globalFunctions = /** @type {Map<string, Function>} */ (new Map());
const moduleLoads = /** @type {Map<string, Promise<void>>} */ (new Map());
const moduleResults = /** @type {Map<string, {module?: any, error?: unknown}>} */ (new Map());

// Calls lane.
let nextSeq = 1;
let callQueue = /** @type {Outgoing[]} */ ([]);
let inflight = /** @type {Outgoing[]|null} */ (null);  // the one batch being POSTed
let callsFlushScheduled = false;
let gapResends = 0;
const callsRetry = new RetryTimer(() => { if (inflight) postCalls(inflight); });

// Control lane.
let controlQueue = /** @type {string[]} */ ([]);
let controlInflight = false;
let controlFlushScheduled = false;
let ackWanted = false;
let ackTimer = /** @type {Timer} */ (undefined);
const controlRetry = new RetryTimer(() => flushControl());

// Event stream.
let stream = /** @type {EventSource|null} */ (null);
let lastEventId = 0;
let ackedId = 0;  // highest event id sent to the server as `ack`
let eventGapResyncs = 0;
let inbox = Promise.resolve();  // incoming messages are applied in order along this chain
// Server → browser calls started and not yet answered, by call id: the server
// may cancel them (or give up waiting). Bounded by the server's pending limit.
const runningCalls = /** @type {Map<number, AbortController>} */ (new Map());
let currentCallSignal = /** @type {AbortSignal|undefined} */ (undefined);  // see Athena.callSignal()
let watchdog = /** @type {Timer} */ (undefined);
const streamRetry = new RetryTimer(() => openStream());

let banner = /** @type {HTMLElement|null} */ (null);
let bannerTimer = /** @type {Timer} */ (undefined);

// ---- Errors nobody handles -------------------------------------------------

/** Fires a cancelable `athena:error`; logs unless a listener prevented it. @param {unknown} error */
function reportError(error) {
  if (dispatch("athena:error", { error }, true)) console.error("athena:", error);
}

/** @param {string} type @param {object} detail @param {boolean} [cancelable] @returns {boolean} false if prevented */
function dispatch(type, detail, cancelable = false) {
  return document.dispatchEvent(new CustomEvent(type, { detail, cancelable }));
}

/** Calls `fn`; a throw or a rejected promise is reported, not lost. @param {() => any} fn */
function guarded(fn) {
  try {
    const result = fn();
    if (result !== null && typeof result?.then === "function") result.then(undefined, reportError);
  } catch (error) {
    reportError(error);
  }
}

// ---- Widget ----------------------------------------------------------------

/**
 * Base class of every JS widget. The runtime constructs subclasses as
 * `new Cls(node, ...initialArguments)`; a subclass calls `super(node)` first.
 */
export class Widget {
  /** @param {HTMLElement} node the element carrying data-athena-widget */
  constructor(node) {
    /** The widget's root element. */
    this.node = node;
    /** The server element's id (data-athena-widget). */
    this.widgetId = Number(node.getAttribute("data-athena-widget"));
    this.widgetParent = /** @type {Widget|null} */ (null);
    this.childWidgets = /** @type {Widget[]} */ ([]);
    widgetsByNode.set(node, this);
    if (Number.isInteger(this.widgetId)) widgetsById.set(this.widgetId, this);
    bindEvents(this);
  }

  /** The widget owning `node`: the nearest widget root at or above it. @param {Node|null} node @returns {Widget|null} */
  static get(node) {
    for (let n = node; n; n = n.parentNode) {
      const widget = widgetsByNode.get(n);
      if (widget) return widget;
    }
    return null;
  }

  /**
   * Calls an exposed method of the server element.
   * @param {string} method
   * @param {...any} args JSON-serializable, captured at call time
   * @returns {Promise<any>} its return value (LiveElements arrive as Widgets);
   *   rejects with RemoteError, TimeoutError or ConnectionLost
   */
  callRemote(method, ...args) {
    return this.callRemoteWithOptions(method, args);
  }

  /** Calls an exposed method with keyword arguments. @param {string} method @param {Record<string, any>} kwargs @returns {Promise<any>} */
  callRemoteKw(method, kwargs) {
    return this.callRemoteWithOptions(method, [], kwargs);
  }

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
  callRemoteWithOptions(method, args = [], kwargs = {}, options = {}) {
    if (typeof method !== "string" || !method) {
      return Promise.reject(new TypeError("callRemote: method must be a non-empty string"));
    }
    const timeoutMs = options.timeoutMs ?? config?.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    return enqueue({ type: "call", widget: this.widgetId, method, args, kwargs }, timeoutMs, false, options.signal);
  }

  /**
   * Constructs a widget from a widget value (or adopts an already built
   * Widget) as a child of this one. The caller inserts `widget.node`.
   * @param {WidgetInfo|Widget} info @returns {Promise<Widget>}
   */
  async addChildWidget(info) {
    if (info instanceof Widget) {
      link(info, this);
      return info;
    }
    if (!isWidgetValue(info)) throw new TypeError('addChildWidget expects a Widget or {"$athena": "widget", ...}');
    return (await buildWidgets([{ info, parent: this }]))[0];
  }

  /**
   * Detaches this widget on both sides: at once runs the detached() hooks
   * (children first), unregisters it and removes its node; tells the server.
   * @returns {Promise<void>} resolves when the server has acknowledged
   */
  detach() {
    if (widgetsByNode.get(this.node) !== this) return Promise.resolve();
    const timeoutMs = config?.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const acknowledged = enqueue({ type: "detach", widget: this.widgetId }, timeoutMs, true);
    teardown(this);
    return acknowledged;
  }

  /** Hook: runs once every widget of the same render is constructed. */
  loaded() {}

  /** Hook: runs when the widget is detached, after its children's hooks. */
  detached() {}
}

/** @param {any} value @returns {value is WidgetInfo} */
function isWidgetValue(value) {
  return value !== null && typeof value === "object" && value.$athena === "widget";
}

/** Sets widgetParent, keeping both parents' childWidgets in step. @param {Widget} widget @param {Widget|null} parent */
function link(widget, parent) {
  const old = widget.widgetParent;
  if (old) old.childWidgets = old.childWidgets.filter((w) => w !== widget);
  widget.widgetParent = parent;
  if (parent) parent.childWidgets.push(widget);
}

/** @param {Node} node */
function forgetNode(node) {
  const widget = widgetsByNode.get(node);
  if (!widget) return;
  widgetsByNode.delete(node);
  if (widgetsById.get(widget.widgetId) === widget) widgetsById.delete(widget.widgetId);
}

/** Local half of a detach (either side's): hooks children first, unregister, remove. @param {Widget} widget */
function teardown(widget) {
  const root = widget.node;
  /** @param {Widget} w */
  const visit = (w) => {
    for (const child of [...w.childWidgets]) visit(child);
    guarded(() => w.detached());
    forgetNode(w.node);
    if (w !== widget && !root.contains(w.node)) w.node.remove(); // moved elsewhere (a dialog on <body>)
  };
  visit(widget);
  link(widget, null);
  root.remove();
}

/**
 * Binds `data-athena-on="event:method ..."` on the widget's node and the
 * descendants it owns (subtrees of nested widgets belong to those).
 * @param {Widget} widget
 */
function bindEvents(widget) {
  const root = widget.node;
  const walker = root.ownerDocument.createTreeWalker(root, NodeFilter.SHOW_ELEMENT, {
    acceptNode: (el) => (el !== root && /** @type {Element} */ (el).hasAttribute("data-athena-widget")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  for (let el = /** @type {Element|null} */ (root); el; el = /** @type {Element|null} */ (walker.nextNode())) {
    for (const token of (el.getAttribute("data-athena-on") || "").split(/\s+/).filter(Boolean)) {
      const [type, method, extra] = token.split(":");
      if (!type || !method || extra !== undefined) {
        reportError(new SyntaxError(`athena: bad data-athena-on entry "${token}" (expected event:method)`));
        continue;
      }
      el.addEventListener(type, (event) => {
        if (event.type === "submit") event.preventDefault();
        if (widgetsByNode.get(widget.node) !== widget) return; // detached, or its constructor threw
        const fn = /** @type {any} */ (widget)[method];
        if (typeof fn !== "function") {
          reportError(new TypeError(`athena: ${widget.constructor.name} has no method "${method}" (data-athena-on)`));
        } else {
          guarded(() => fn.call(widget, event)); // nobody else owns the handler's promise
        }
      });
    }
  }
}

// ---- Loading and constructing widgets ---------------------------------------

/** @param {Element} node */
function moduleUrl(node) {
  return new URL(node.getAttribute("data-athena-module") || "", document.baseURI).href;
}

/** Imports the modules of `nodes` in parallel; never rejects (failures are reported per widget). @param {Element[]} nodes */
function loadModules(nodes) {
  return Promise.all([...new Set(nodes.map(moduleUrl))].map((url) => {
    let load = moduleLoads.get(url);
    if (!load) {
      load = import(url).then((module) => { moduleResults.set(url, { module }); },
        (error) => { moduleResults.set(url, { error }); });
      moduleLoads.set(url, load);
    }
    return load;
  }));
}

/** @param {Element} node whose module is loaded @returns {new (node: HTMLElement, ...args: any[]) => Widget} */
function resolveClass(node) {
  const spec = node.getAttribute("data-athena-class") || "";
  const name = spec.slice(spec.lastIndexOf(".") + 1);
  const url = moduleUrl(node);
  const where = `widget ${node.getAttribute("data-athena-widget")} (${spec})`;
  const result = moduleResults.get(url);
  if (!result || "error" in result) throw new Error(`athena: ${where}: module ${url} failed to load`, { cause: result?.error });
  const cls = result.module[name];
  if (typeof cls !== "function") throw new Error(`athena: ${where}: module ${url} has no export "${name}"`);
  if (cls !== Widget && !(cls.prototype instanceof Widget)) {
    throw new TypeError(`athena: ${where}: "${name}" does not extend Widget from ${import.meta.url}` +
      ' (does the import map send "athena" to this same URL?)');
  }
  return cls;
}

/**
 * Constructs the widgets of `nodes` (document order: parents first), links
 * them by DOM ancestry, then calls loaded() on each.
 * @param {HTMLElement[]} nodes their modules loaded
 * @param {Widget|null} rootParent parent of nodes[0] when no ancestor is a widget
 * @param {boolean} strict nodes[0] failing throws (a widget value) instead of being reported and skipped
 * @returns {Widget[]}
 */
function constructWidgets(nodes, rootParent, strict) {
  /** @type {Widget[]} */
  const built = [];
  for (const node of nodes) {
    if (widgetsByNode.has(node)) continue;
    let widget;
    try {
      const args = JSON.parse(node.getAttribute("data-athena-args") || "[]");
      if (!Array.isArray(args)) throw new TypeError("athena: data-athena-args must be a JSON array");
      widget = new (resolveClass(node))(node, ...args);
    } catch (error) {
      forgetNode(node); // the base constructor may have registered it
      if (strict && node === nodes[0]) throw error;
      reportError(error);
      continue;
    }
    link(widget, Widget.get(node.parentNode) ?? (node === nodes[0] ? rootParent : null));
    built.push(widget);
  }
  for (const widget of built) guarded(() => widget.loaded());
  return built;
}

/**
 * Builds widget values into constructed Widgets, not yet in the document.
 * @param {{info: WidgetInfo, parent: Widget|null}[]} items @returns {Promise<Widget[]>}
 */
async function buildWidgets(items) {
  const trees = items.map(({ info }) => {
    const template = document.createElement("template");
    template.innerHTML = String(info.html); // server-rendered markup: the one place we parse HTML
    const root = template.content.firstElementChild;
    if (!root?.hasAttribute("data-athena-widget")) throw new Error(`athena: widget value ${info.id} has no widget root`);
    const node = /** @type {HTMLElement} */ (document.adoptNode(root));
    return [node, .../** @type {NodeListOf<HTMLElement>} */ (node.querySelectorAll(WIDGET_SELECTOR))];
  });
  await Promise.all(trees.map(loadModules)); // every value's modules in parallel
  return trees.map((nodes, i) => constructWidgets(nodes, items[i].parent, true)[0]);
}

/**
 * Replaces every widget value inside freshly parsed JSON by its Widget (in
 * place: the JSON is ours). Plain data costs one synchronous walk.
 * @param {any} value @returns {Promise<any>}
 */
async function decodeValues(value) {
  const box = { value };
  /** @type {{holder: any, key: string|number, info: WidgetInfo}[]} */
  const refs = [];
  /** @param {any} holder @param {string|number} key */
  const visit = (holder, key) => {
    const v = holder[key];
    if (v === null || typeof v !== "object") return;
    if (isWidgetValue(v)) refs.push({ holder, key, info: v });
    else if (Array.isArray(v)) for (let i = 0; i < v.length; i++) visit(v, i);
    else for (const k of Object.keys(v)) visit(v, k);
  };
  visit(box, "value");
  if (refs.length === 0) return value;
  const widgets = await buildWidgets(refs.map(({ info }) => ({
    info, parent: typeof info.parent === "number" ? widgetsById.get(info.parent) ?? null : null,
  })));
  refs.forEach((ref, i) => { ref.holder[ref.key] = widgets[i]; });
  return box.value;
}

// ---- Calls lane (sequenced: call, detach) -----------------------------------

/**
 * @param {object} message without seq @param {number} timeoutMs @param {boolean} isDetach
 * @param {AbortSignal} [signal] @returns {Promise<any>}
 */
function enqueue(message, timeoutMs, isDetach, signal) {
  if (!config) return Promise.reject(new ConnectionLost("athena: no page on this document (no athena-config meta)"));
  if (isGone()) return Promise.reject(new ConnectionLost("athena: the page is gone"));
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (callQueue.length >= MAX_QUEUED_MESSAGES) {
    return Promise.reject(new ConnectionLost(`athena: more than ${MAX_QUEUED_MESSAGES} calls waiting to be sent`));
  }
  let json;
  try {
    json = JSON.stringify(message); // captures the arguments as they are now
  } catch (error) {
    return Promise.reject(new TypeError(`athena: arguments are not JSON-serializable: ${error}`));
  }
  return new Promise((resolve, reject) => {
    /** @type {Outgoing} */
    const entry = { json, seq: 0, isDetach, timeoutMs, settled: false, timer: undefined, unlisten: undefined, resolve, reject };
    /** @param {unknown} error */
    const abandon = (error) => {
      // An unsent call is dropped: its caller was told it failed. A detach is
      // still sent: the server must free the element.
      if (entry.seq === 0 && !isDetach) callQueue = callQueue.filter((e) => e !== entry);
      settle(entry, () => reject(error));
    };
    entry.timer = setTimeout(() => abandon(new TimeoutError(`athena: no answer within ${timeoutMs} ms`)), timeoutMs);
    if (signal) {
      const onAbort = () => abandon(signal.reason);
      signal.addEventListener("abort", onAbort, { once: true });
      entry.unlisten = () => signal.removeEventListener("abort", onAbort);
    }
    callQueue.push(entry);
    scheduleCallsFlush();
  });
}

/** @param {Outgoing} entry @param {() => void} action */
function settle(entry, action) {
  if (entry.settled) return; // a late answer after a timeout, or a duplicate
  entry.settled = true;
  clearTimeout(entry.timer);
  entry.unlisten?.();
  action();
}

function scheduleCallsFlush() {
  if (callsFlushScheduled) return;
  callsFlushScheduled = true;
  queueMicrotask(flushCalls); // one batch for everything called in this task
}

function flushCalls() {
  callsFlushScheduled = false;
  if (inflight || !config || isGone() || callQueue.length === 0) return;
  /** @type {Outgoing[]} */
  const batch = [];
  let bytes = 0;
  while (callQueue.length && batch.length < MAX_BATCH_MESSAGES) {
    const entry = callQueue[0];
    if (batch.length && bytes + entry.json.length > MAX_BATCH_BYTES) break; // a big one goes alone
    callQueue.shift();
    entry.seq = nextSeq++;
    bytes += entry.json.length;
    batch.push(entry);
  }
  inflight = batch;
  postCalls(batch);
}

/** Sends (or re-sends, with the same seqs) a batch and handles the reply. @param {Outgoing[]} batch */
async function postCalls(batch) {
  const timeoutMs = Math.max(...batch.map((e) => e.timeoutMs)) + CALLS_POST_SLACK_MS;
  // `json` is a non-empty object: splice the seq in front of its first key.
  const reply = await post(batch.map((e) => `{"seq":${e.seq},${e.json.slice(1)}`), timeoutMs);
  if (inflight !== batch || isGone()) return;
  const kind = classify(reply);
  const body = reply?.body;
  if (kind === "retry") {
    // Lost response, network down, 5xx: the same seqs again; the server
    // answers those it already ran from its record, so nothing runs twice.
    callsRetry.schedule();
    return;
  }
  if (kind === "gone") return goGone(body?.error?.code ?? `http-${reply?.status}`);
  inflight = null;
  if (kind === "results") {
    callsRetry.reset();
    gapResends = 0;
    applyCallResults(batch, body.results);
  } else if (kind === "gap") {
    const expected = body?.error?.expected ?? body?.expected;
    const valid = Number.isInteger(expected) && expected >= 1;
    if (valid && expected < batch[0].seq && gapResends < MAX_GAP_RESENDS) {
      // The server never looked at this batch: renumber it from `expected`.
      gapResends += 1;
      for (const e of batch) e.seq = 0;
      callQueue = batch.filter((e) => !e.settled || e.isDetach).concat(callQueue);
      nextSeq = expected;
    } else {
      nextSeq = valid ? expected : batch[0].seq;
      rejectBatch(batch, reply);
    }
  } else {
    // 4xx without results: nothing was looked at, so its seqs are free again.
    nextSeq = batch[0].seq;
    rejectBatch(batch, reply);
  }
  scheduleCallsFlush();
}

/** @param {Outgoing[]} batch @param {Reply|null} reply */
function rejectBatch(batch, reply) {
  for (const entry of batch) {
    entry.seq = 0;
    settle(entry, () => entry.reject(remoteError(reply?.body?.error, `http-${reply?.status}`)));
  }
}

/** @param {Outgoing[]} batch @param {any[]} results */
function applyCallResults(batch, results) {
  const bySeq = new Map(batch.map((e) => [e.seq, e]));
  for (const result of results) {
    const entry = result && bySeq.get(result.seq);
    if (!entry) continue; // unknown or duplicate seq
    bySeq.delete(result.seq);
    if (result.error) {
      const error = remoteError(result.error, "remote-error");
      // widget-not-found on a detach: the server had detached it too. Done.
      const done = entry.isDetach && error.code === "widget-not-found";
      settle(entry, () => (done ? entry.resolve(undefined) : entry.reject(error)));
    } else if (entry.isDetach) {
      settle(entry, () => entry.resolve(undefined));
    } else {
      settle(entry, () => { decodeValues(result.ok ?? null).then(entry.resolve, entry.reject); });
    }
  }
  for (const entry of bySeq.values()) {
    settle(entry, () => entry.reject(new RemoteError(`athena: no result for seq ${entry.seq}`, { code: "no-result" })));
  }
}

/** @param {any} error the wire error object @param {string} fallbackCode */
function remoteError(error, fallbackCode) {
  const e = error !== null && typeof error === "object" ? error : {};
  const code = typeof e.code === "string" ? e.code : fallbackCode;
  const remoteName = typeof e.name === "string" ? e.name : "RemoteError";
  return new RemoteError(typeof e.message === "string" && e.message ? e.message : code, { code, remoteName });
}

/** @param {Reply|null} reply @returns {"results"|"gone"|"gap"|"rejected"|"retry"} */
function classify(reply) {
  if (!reply) return "retry";
  const { status: http, body } = reply;
  const code = body?.error?.code;
  // A results list, even with a 4xx status: the batch was consumed, each call answered.
  if (Array.isArray(body?.results) && (http < 300 || (http >= 400 && http < 500))) return "results";
  if (http === 410 || code === "page-gone" || code === "page-not-found") return "gone";
  if (http === 409) return "gap";
  if (http >= 400 && http < 500 && !RETRY_STATUSES.has(http)) return "rejected";
  return "retry";
}

/**
 * One POST to the calls endpoint; null on network failure or timeout.
 * @param {string[]} messages serialized @param {number} timeoutMs @returns {Promise<Reply|null>}
 */
async function post(messages, timeoutMs) {
  const cfg = /** @type {AthenaConfig} */ (config);
  const body = `{"ack":${lastEventId},"messages":[${messages.join(",")}]}`;
  ackedId = Math.max(ackedId, lastEventId);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs); // a dead TCP connection must not stall a lane
  try {
    const response = await fetch(cfg.calls, {
      method: "POST", credentials: "same-origin", cache: "no-store", body, signal: abort.signal,
      headers: { "Content-Type": "application/json", "X-Athena-Token": cfg.token },
    });
    let json = null;
    try { json = await response.json(); } catch { /* empty or not JSON: classify by status */ }
    return { status: response.status, body: json };
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
  }
}

// ---- Control lane (results of server calls, acks) ---------------------------

function scheduleControlFlush() {
  if (controlFlushScheduled) return;
  controlFlushScheduled = true;
  queueMicrotask(flushControl);
}

async function flushControl() {
  controlFlushScheduled = false;
  if (controlInflight || controlRetry.pending || !config || isGone()) return;
  if (controlQueue.length === 0 && !(ackWanted && lastEventId > ackedId)) return;
  const messages = controlQueue.slice(0, MAX_BATCH_MESSAGES);
  controlQueue = controlQueue.slice(messages.length);
  ackWanted = false;
  controlInflight = true;
  const reply = await post(messages, CONTROL_POST_TIMEOUT_MS);
  controlInflight = false;
  if (isGone()) return;
  const kind = classify(reply);
  if (reply && reply.status >= 200 && reply.status < 300) {
    controlRetry.reset();
  } else if (kind === "gone") {
    return goGone(reply?.body?.error?.code ?? `http-${reply?.status}`);
  } else if (kind === "retry") {
    controlQueue = messages.concat(controlQueue); // results are idempotent: resending is safe
    ackWanted = true;
    return controlRetry.schedule();
  } else {
    reportError(remoteError(reply?.body?.error, `http-${reply?.status}`));
  }
  if (controlQueue.length || ackWanted) scheduleControlFlush();
}

/** Queues the answer to a server → browser call. @param {number|null} callId @param {{ok: any}|{error: unknown}} outcome */
function sendResult(callId, outcome) {
  if (callId === null) { // nobody waits for a broadcast: its failure is ours to report
    if ("error" in outcome) reportError(outcome.error);
    return;
  }
  let json;
  if ("ok" in outcome) {
    try {
      json = JSON.stringify({ type: "result", call: callId, ok: outcome.ok === undefined ? null : outcome.ok });
    } catch (error) {
      outcome = { error: new TypeError(`result is not JSON-serializable: ${error}`) };
    }
  }
  if (json === undefined && "error" in outcome) {
    const e = outcome.error;
    const error = e instanceof Error ? { name: e.name, message: e.message } : { name: "Error", message: String(e) };
    json = JSON.stringify({ type: "result", call: callId, error });
  }
  controlQueue.push(/** @type {string} */ (json));
  scheduleControlFlush();
}

/** A standalone ack when no other POST carries one soon: debounced, or at once after many. */
function maybeAck() {
  const unacked = lastEventId - ackedId;
  if (unacked <= 0) return;
  const ackNow = () => {
    clearTimeout(ackTimer);
    ackTimer = undefined;
    ackWanted = true;
    scheduleControlFlush();
  };
  if (unacked >= /** @type {AthenaConfig} */ (config).ackEvery) ackNow();
  else if (ackTimer === undefined) {
    const jitter = 1 + ACK_DELAY_JITTER * (2 * Math.random() - 1);
    ackTimer = setTimeout(ackNow, ACK_DELAY_MS * jitter);
  }
}

// ---- Event stream (server → browser) ----------------------------------------

function openStream() {
  if (!config || stream || isGone() || unloading || frozen) return;
  // A new EventSource sends no Last-Event-ID, so say it in the query (every
  // reconnect is a new EventSource: see the "error" listener).
  const url = new URL(config.events, document.baseURI);
  url.searchParams.set("last", String(lastEventId));
  const es = new EventSource(url.href);
  stream = es;
  armWatchdog();
  /** @param {string} type @param {(event: MessageEvent) => void} handler */
  const on = (type, handler) => es.addEventListener(type, (event) => {
    if (es === stream) handler(/** @type {MessageEvent} */ (event)); // ignore a replaced stream
  });
  on("open", onStreamOpen);
  on("message", onStreamMessage);
  on("heartbeat", armWatchdog);
  on("gone", (event) => {
    let reason = "gone";
    try { reason = String(JSON.parse(event.data).reason ?? reason); } catch { /* keep the default */ }
    goGone(reason);
  });
  on("error", () => {
    setDisconnected();
    // One reconnect policy in every engine: ours (streamRetry's backoff). An
    // EventSource left CONNECTING retries by itself at its engine's pace, and
    // Firefox's pace plus ours made 46-63 attempts in a 5 s outage where
    // Chromium and WebKit made 9-10. So a failed stream is closed, whatever
    // its readyState, and reopened by the policy (with ?last=, see above).
    closeStream();
    streamRetry.schedule();
  });
}

function closeStream() {
  clearTimeout(watchdog);
  stream?.close();
  stream = null;
}

/** Heartbeats exist because a dead connection is otherwise silent. */
function armWatchdog() {
  clearTimeout(watchdog);
  watchdog = setTimeout(() => {
    closeStream();
    setDisconnected();
    streamRetry.schedule();
  }, /** @type {AthenaConfig} */ (config).heartbeatMs * HEARTBEAT_TOLERANCE);
}

function onStreamOpen() {
  streamRetry.reset();
  armWatchdog();
  const wasConnected = status === "connected";
  setStatus("connected");
  hideBanner();
  if (!everConnected) dispatch("athena:connected", {});
  else if (!wasConnected) dispatch("athena:reconnected", {});
  everConnected = true;
  // The network is back: waiting POSTs need not sit out their backoff.
  callsRetry.fireNow();
  controlRetry.fireNow();
}

/** @param {MessageEvent} event */
function onStreamMessage(event) {
  armWatchdog();
  const id = Number(event.lastEventId);
  if (!Number.isSafeInteger(id) || id <= 0) {
    return reportError(new Error(`athena: stream message without a valid id (${event.lastEventId})`));
  }
  if (id <= lastEventId) return; // already received (replay overlap)
  if (id !== lastEventId + 1) {
    if (eventGapResyncs < MAX_EVENT_GAP_RESYNCS) {
      eventGapResyncs += 1; // ids have no gaps, so something was lost: ask for a replay
      closeStream();
      return openStream();
    }
    reportError(new Error(`athena: events ${lastEventId + 1}..${id - 1} were lost`));
  }
  eventGapResyncs = 0;
  lastEventId = id;
  /** @type {any} */
  let message;
  try {
    message = JSON.parse(event.data);
  } catch (error) {
    reportError(error);
  }
  // Applying a message may wait for a module import; the chain keeps the next
  // message from overtaking it.
  if (message !== undefined) inbox = inbox.then(() => applyMessage(message)).catch(reportError);
  maybeAck();
}

/** @param {any} message */
async function applyMessage(message) {
  if (message?.type === "call") return applyCall(message);
  if (message?.type === "cancel") {
    const controller = runningCalls.get(message.call);
    runningCalls.delete(message.call);
    controller?.abort(new DOMException("athena: the server cancelled this call", "AbortError"));
    return;
  }
  if (message?.type !== "detach") throw new Error(`athena: unknown message type ${JSON.stringify(message?.type)}`);
  const widget = widgetsById.get(message.widget);
  if (widget) teardown(widget);
}

/** @param {any} message */
async function applyCall(message) {
  const callId = Number.isInteger(message.call) ? message.call : null;
  const controller = callId === null ? undefined : new AbortController();
  if (controller) runningCalls.set(/** @type {number} */ (callId), controller);
  /** @type {Promise<any>} */
  let outcome;
  try {
    const args = await decodeValues(Array.isArray(message.args) ? message.args : []);
    const [fn, target] = resolveTarget(message.widget, message.method);
    currentCallSignal = controller?.signal;
    try {
      outcome = Promise.resolve(fn.apply(target, args));
    } finally {
      currentCallSignal = undefined;
    }
  } catch (error) {
    outcome = Promise.reject(error);
  }
  /** @param {{ok: any}|{error: unknown}} result */
  const answer = (result) => {
    if (controller?.signal.aborted) return; // cancelled: the server no longer listens
    runningCalls.delete(/** @type {number} */ (callId));
    sendResult(callId, result);
  };
  // Not awaited: a slow method (one waiting for the user, say) must not hold
  // up the messages after it. It was *started* in order; that is the guarantee.
  outcome.then((ok) => answer({ ok }), (error) => answer({ error }));
}

/** @param {number|null} widgetId @param {string} method @returns {[Function, any]} */
function resolveTarget(widgetId, method) {
  if (widgetId === null || widgetId === undefined) {
    const fn = globalFunctions.get(method);
    if (!fn) throw new RemoteError(`no global function "${method}" is registered`, { code: "method-not-found" });
    return [fn, undefined];
  }
  const widget = widgetsById.get(widgetId);
  if (!widget) throw new RemoteError(`no widget ${widgetId} on this page`, { code: "widget-not-found" });
  const fn = typeof method === "string" ? /** @type {any} */ (widget)[method] : undefined;
  if (typeof fn !== "function" || method === "constructor" || method.startsWith("_")
      || fn === /** @type {any} */ (Object.prototype)[method]) {
    throw new RemoteError(`${widget.constructor.name} has no method "${method}"`, { code: "method-not-found" });
  }
  return [fn, widget];
}

// ---- Status, banner, gone ---------------------------------------------------

/** A function, not a comparison, so TypeScript does not narrow `status` across awaits. */
function isGone() {
  return status === "gone";
}

/** @param {Status} value */
function setStatus(value) {
  status = value;
  document.documentElement.setAttribute("data-athena-status", value);
}

function setDisconnected() {
  if (isGone() || status === "disconnected" || unloading) return;
  setStatus("disconnected");
  dispatch("athena:disconnected", {});
  clearTimeout(bannerTimer);
  // Short blips (a replaced stream, a proxy timeout) should not flash a banner.
  bannerTimer = setTimeout(() => { if (status === "disconnected") showBanner("disconnected"); }, BANNER_DELAY_MS);
}

/** @param {"disconnected"|"gone"} state */
function showBanner(state) {
  if (!document.body) return;
  if (!banner) {
    banner = Object.assign(document.createElement("div"), { className: "athena-banner" });
    banner.setAttribute("role", "status");
    banner.setAttribute("aria-live", "polite");
    const button = Object.assign(document.createElement("button"),
      { type: "button", className: "athena-banner-reload", textContent: BANNER_RELOAD_LABEL });
    button.addEventListener("click", () => location.reload());
    banner.append(Object.assign(document.createElement("span"), { className: "athena-banner-text" }), button);
    document.body.append(banner);
  }
  banner.setAttribute("data-athena-banner", state);
  const [text, button] = /** @type {HTMLElement[]} */ ([...banner.children]);
  text.textContent = state === "gone" ? BANNER_GONE_TEXT : BANNER_DISCONNECTED_TEXT;
  button.hidden = state !== "gone";
  banner.hidden = false;
}

function hideBanner() {
  clearTimeout(bannerTimer);
  if (banner) banner.hidden = true;
}

/** Replay is impossible: fail all pending, stop, reload (jitter, loop guard) unless prevented. @param {string} reason */
function goGone(reason) {
  if (isGone()) return;
  setStatus("gone");
  closeStream();
  for (const timer of [streamRetry, callsRetry, controlRetry]) timer.reset();
  clearTimeout(ackTimer);
  clearTimeout(bannerTimer);
  for (const controller of runningCalls.values()) {
    controller.abort(new ConnectionLost(`athena: the page is gone (${reason})`));
  }
  runningCalls.clear();
  const pending = [...(inflight ?? []), ...callQueue];
  inflight = null;
  callQueue = [];
  controlQueue = [];
  for (const entry of pending) {
    settle(entry, () => entry.reject(new ConnectionLost(`athena: the page is gone (${reason})`)));
  }
  if (!dispatch("athena:gone", { reason }, true)) return;
  showBanner("gone");
  if (reloadAllowed()) {
    // Jitter: a restarted server is not hit by every tab in the same instant.
    setTimeout(() => location.reload(), RELOAD_JITTER_MIN_MS + Math.random() * (RELOAD_JITTER_MAX_MS - RELOAD_JITTER_MIN_MS));
  }
}

/** Loop guard: at most RELOAD_GUARD_MAX automatic reloads per window, per tab. */
function reloadAllowed() {
  try {
    const now = Date.now();
    const raw = JSON.parse(sessionStorage.getItem(RELOAD_GUARD_KEY) || "[]");
    const recent = (Array.isArray(raw) ? raw : []).filter((t) => typeof t === "number" && now - t < RELOAD_GUARD_WINDOW_MS);
    if (recent.length >= RELOAD_GUARD_MAX) return false;
    sessionStorage.setItem(RELOAD_GUARD_KEY, JSON.stringify([...recent, now]));
    return true;
  } catch {
    return false; // no storage, no guard: the person presses Reload
  }
}

// ---- Page lifecycle and boot ------------------------------------------------

/** @param {PageTransitionEvent} event */
function onPageHide(event) {
  // The close beacon is the FIRST thing done here: when a tab is closed,
  // Firefox may stop running this listener part-way through (with the stream
  // closed first, 2 closes in 3 sent no beacon and the page lived on until
  // ATHENA_PAGE_TIMEOUT).
  if (!event.persisted && !unloading && !isGone()) sendCloseBeacon();
  streamRetry.reset();
  closeStream();
  if (event.persisted) { // back/forward cache: the page may come back
    frozen = true;
    return;
  }
  unloading = true;
}

/** Tells the server the page is closed (a beacon outlives the document). */
function sendCloseBeacon() {
  const cfg = /** @type {AthenaConfig} */ (config);
  const body = JSON.stringify({ token: cfg.token });
  if (!navigator.sendBeacon?.(cfg.close, new Blob([body], { type: "application/json" }))) {
    fetch(cfg.close, {
      method: "POST", keepalive: true, credentials: "same-origin", headers: { "Content-Type": "application/json" }, body,
    }).catch(() => { /* unloading; the server's page timeout closes the page anyway */ });
  }
}

/** @param {PageTransitionEvent} event */
function onPageShow(event) {
  if (!event.persisted || !frozen) return;
  frozen = false;
  if (!isGone()) setStatus("connecting");
  openStream(); // if the server closed the page meanwhile, the stream says "gone"
}

/** @returns {AthenaConfig|null} */
function readConfig() {
  const meta = document.querySelector(CONFIG_META_SELECTOR);
  if (!meta) return null;
  try {
    const raw = JSON.parse(meta.getAttribute("content") || "");
    for (const key of ["page", "token", "events", "calls", "close"]) {
      if (typeof raw[key] !== "string") throw new TypeError(`missing "${key}"`);
    }
    return {
      ...raw,
      heartbeatMs: raw.heartbeatMs > 0 ? raw.heartbeatMs : DEFAULT_HEARTBEAT_MS,
      callTimeoutMs: raw.callTimeoutMs > 0 ? raw.callTimeoutMs : DEFAULT_CALL_TIMEOUT_MS,
      ackEvery: raw.ackEvery > 0 ? raw.ackEvery : ACK_EVERY_MESSAGES,
      debug: Boolean(raw.debug),
    };
  } catch (error) {
    console.error("athena: bad athena-config meta tag:", error);
    return null;
  }
}

async function boot() {
  config = readConfig(); // before any await: widget constructors may callRemote
  if (!config) return; // imported on a page without a LivePage: stay inert
  setStatus("connecting");
  window.addEventListener("pagehide", onPageHide);
  window.addEventListener("pageshow", onPageShow);
  window.addEventListener("online", () => {
    for (const timer of [callsRetry, controlRetry, streamRetry]) timer.fireNow();
  });
  window.addEventListener("unhandledrejection", (event) => {
    const error = event.reason;
    if (error instanceof RemoteError || error instanceof TimeoutError || error instanceof ConnectionLost) {
      // The browser logs it already; cancelling athena:error silences that too.
      if (!dispatch("athena:error", { error }, true)) event.preventDefault();
    }
  });
  if (document.readyState === "loading") {
    await new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));
  }
  const nodes = [.../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(WIDGET_SELECTOR))];
  await loadModules(nodes);
  dispatch("athena:ready", { widgets: constructWidgets(nodes, null, false) });
  openStream();
}

// ---- Public namespace -------------------------------------------------------

/**
 * The page-level runtime.
 * @namespace
 */
export const Athena = Object.freeze({
  /**
   * Registers a page-level function for the server's `page.call_remote(name, *args)`.
   * @param {string} name
   * @param {Function} fn may return a Promise; its value answers the server
   */
  registerGlobal(name, fn) {
    if (typeof name !== "string" || !name) throw new TypeError("registerGlobal: name must be a non-empty string");
    if (typeof fn !== "function") throw new TypeError(`registerGlobal("${name}"): fn must be a function`);
    globalFunctions.set(name, fn);
  },

  /**
   * The AbortSignal of the server → browser call being started now, for the
   * method the server called (a widget method or a registered global). Read
   * it synchronously, before the method's first `await`; elsewhere it is
   * `undefined`. It aborts when the server cancels the call
   * (`RemoteCall.cancel()`) or the page is gone; the method's result is then
   * not sent.
   * @returns {AbortSignal|undefined}
   */
  callSignal() { return currentCallSignal; },

  /**
   * A frozen snapshot of the runtime, for tests and debugging.
   * @returns {{id: string|null, status: Status, lastEventId: number, nextSeq: number,
   *   queued: number, widgets: Map<number, Widget>}}
   */
  get page() {
    return Object.freeze({
      id: config?.page ?? null, status, lastEventId, nextSeq, queued: callQueue.length, widgets: new Map(widgetsById),
    });
  },

  /**
   * Connection state as in `<html data-athena-status>`, or "idle" with no page.
   * @returns {Status}
   */
  get connection() { return status; },

  /** Every live widget of the page, in construction order. @returns {Widget[]} */
  widgets() { return [...widgetsById.values()]; },
});

if (typeof document !== "undefined") boot().catch(reportError);
