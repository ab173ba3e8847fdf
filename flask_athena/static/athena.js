'use strict';
/**
 * flask_athena browser runtime: Nevow Athena "live elements" for Flask.
 *
 * One no-build ES module, no dependencies. The wire protocol is
 * docs/protocol.rst; this file implements it exactly. Public surface:
 *
 *   Widget          base class of every JS widget (callRemote, detach, ...)
 *   Athena          namespace: registerGlobal(name, fn), page, connection, widgets()
 *   RemoteError     a browser → server call failed on the server
 *   TimeoutError    a call got no answer within its timeout
 *   ConnectionLost  the page is gone (or the offline queue is full)
 *
 * DOM events on `document`: athena:ready, athena:connected,
 * athena:disconnected, athena:reconnected, athena:gone (cancelable: cancels
 * the reload and the banner), athena:error (cancelable: cancels the console
 * log). `<html data-athena-status>` is connecting | connected | disconnected |
 * gone.
 *
 * Two POST lanes go to the calls endpoint. The *calls lane* carries sequenced
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
/** Silence (in heartbeats) after which the stream counts as dead. */
const HEARTBEAT_TOLERANCE = 2.5;
/** Backoff steps for every retry (POSTs and stream reopen); the last is the cap. */
const RETRY_STEPS_MS = [250, 500, 1000, 2000, 5000];
const RETRY_JITTER = 0.3;
/** HTTP statuses that mean "try again later" although they are 4xx. */
const RETRY_STATUSES = new Set([408, 425, 429]);
const MAX_QUEUED_MESSAGES = 1000;
const MAX_BATCH_MESSAGES = 100;
const MAX_BATCH_BYTES = 256 * 1024;
/** A calls POST may legitimately take as long as its slowest call, plus this. */
const CALLS_POST_SLACK_MS = 15000;
const CONTROL_POST_TIMEOUT_MS = 15000;
const MAX_GAP_RESENDS = 3;
const MAX_EVENT_GAP_RESYNCS = 1;
const ACK_DELAY_MS = 1000;
const ACK_EVERY_MESSAGES = 64;
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
 * @typedef {object} AthenaConfig
 * @property {string} page
 * @property {string} token
 * @property {string} events
 * @property {string} calls
 * @property {string} close
 * @property {number} heartbeatMs
 * @property {number} callTimeoutMs
 * @property {boolean} debug
 */

/**
 * A widget value: how a server LiveElement travels in args and results.
 * @typedef {object} WidgetInfo
 * @property {"widget"} $athena
 * @property {number} id
 * @property {number|null} [parent]
 * @property {string} html
 */

/**
 * Per-call options for {@link Widget#callRemoteWithOptions}.
 * @typedef {object} CallOptions
 * @property {number} [timeoutMs] overrides the page's callTimeoutMs
 */

/**
 * One sequenced message (call or detach) on the calls lane. `seq` is 0 until
 * the message is put in a batch: numbering at send time means a call that
 * times out before it is sent can be dropped without leaving a gap.
 * @typedef {object} Outgoing
 * @property {string} json  the message without seq, serialized at call time
 * @property {number} seq
 * @property {boolean} isDetach
 * @property {number} timeoutMs
 * @property {boolean} settled
 * @property {ReturnType<typeof setTimeout>|undefined} timer
 * @property {(value: any) => void} resolve
 * @property {(error: unknown) => void} reject
 */

/** @typedef {{status: number, body: any}} Reply */
/** @typedef {"idle"|"connecting"|"connected"|"disconnected"|"gone"} Status */

// ---- Errors ----------------------------------------------------------------

/** A browser → server call failed on the server, or the request was refused. */
export class RemoteError extends Error {
  /**
   * @param {string} message
   * @param {{code?: string, remoteName?: string}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    this.name = "RemoteError";
    /** Stable wire code, e.g. "method-not-found", "remote-error", "forbidden". */
    this.code = details.code ?? "remote-error";
    /** The error name the server reported (a Python class name in debug mode). */
    this.remoteName = details.remoteName ?? "RemoteError";
  }
}

/** A call (or detach) got no answer within its timeout; a late answer is ignored. */
export class TimeoutError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "TimeoutError";
    this.code = "call-timeout";
  }
}

/** The page is gone (closed, expired, server restarted) or the offline queue is full. */
export class ConnectionLost extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "ConnectionLost";
    this.code = "connection-lost";
  }
}

// ---- Retry policy (phoenix's Timer) ----------------------------------------

/**
 * Backoff with jitter and a cap, so a server outage never meets a retry storm.
 * @param {number} tries 1 for the first retry
 * @returns {number}
 */
function backoffMs(tries) {
  const base = RETRY_STEPS_MS[Math.min(tries, RETRY_STEPS_MS.length) - 1];
  return Math.round(base * (1 + RETRY_JITTER * (2 * Math.random() - 1)));
}

/** Runs `callback` after reconnectAfterMs(tries); reset() on success. */
class RetryTimer {
  /**
   * @param {() => void} callback
   * @param {(tries: number) => number} [reconnectAfterMs]
   */
  constructor(callback, reconnectAfterMs = backoffMs) {
    this.callback = callback;
    this.reconnectAfterMs = reconnectAfterMs;
    this.tries = 0;
    /** @type {ReturnType<typeof setTimeout>|undefined} */
    this.handle = undefined;
  }
  get pending() { return this.handle !== undefined; }
  reset() {
    this.tries = 0;
    clearTimeout(this.handle);
    this.handle = undefined;
  }
  schedule() {
    clearTimeout(this.handle);
    this.tries += 1;
    this.handle = setTimeout(() => {
      this.handle = undefined;
      this.callback();
    }, this.reconnectAfterMs(this.tries));
  }
  /** Skip the wait (the network came back). */
  fireNow() {
    if (!this.pending) return;
    clearTimeout(this.handle);
    this.handle = undefined;
    this.callback();
  }
}

// ---- Runtime state (one page per document) ---------------------------------

/** @type {AthenaConfig|null} */
let config = null;
/** @type {Status} */
let status = "idle";
let everConnected = false;
/** Set on a final pagehide: the stream closing then is not an outage. */
let unloading = false;
/** Set while the page sits in the back/forward cache. */
let frozen = false;

/** @type {Map<number, Widget>} */
const widgetsById = new Map();
/** @type {WeakMap<Node, Widget>} */
const widgetsByNode = new WeakMap();
/** @type {Map<string, Function>} */
const globalFunctions = new Map();
/** @type {Map<string, Promise<void>>} */
const moduleLoads = new Map();
/** @type {Map<string, {module?: any, error?: unknown}>} */
const moduleResults = new Map();

// Calls lane.
let nextSeq = 1;
/** @type {Outgoing[]} */
let callQueue = [];
/** @type {Outgoing[]|null} */
let inflight = null;
let callsFlushScheduled = false;
let gapResends = 0;
const callsRetry = new RetryTimer(() => { if (inflight) postCalls(inflight); });

// Control lane.
/** @type {string[]} */
let controlQueue = [];
let controlInflight = false;
let controlFlushScheduled = false;
let ackWanted = false;
/** @type {ReturnType<typeof setTimeout>|undefined} */
let ackTimer;
const controlRetry = new RetryTimer(() => flushControl());

// Event stream.
/** @type {EventSource|null} */
let stream = null;
let lastEventId = 0;
/** Highest event id sent to the server as `ack`. */
let ackedId = 0;
let eventGapResyncs = 0;
/** Incoming messages are applied strictly in order along this chain. */
let inbox = Promise.resolve();
/** @type {ReturnType<typeof setTimeout>|undefined} */
let watchdog;
const streamRetry = new RetryTimer(() => openStream());

// Banner.
/** @type {HTMLElement|null} */
let banner = null;
/** @type {ReturnType<typeof setTimeout>|undefined} */
let bannerTimer;

// ---- Errors nobody handles -------------------------------------------------

/**
 * Fires a cancelable `athena:error`; logs unless a listener prevented it.
 * @param {unknown} error
 */
function reportError(error) {
  if (dispatch("athena:error", { error }, true)) console.error("athena:", error);
}

/**
 * @param {string} type
 * @param {object} detail
 * @param {boolean} [cancelable]
 * @returns {boolean} false when a listener called preventDefault()
 */
function dispatch(type, detail, cancelable = false) {
  return document.dispatchEvent(new CustomEvent(type, { detail, cancelable }));
}

/** @param {any} value @returns {value is PromiseLike<any>} */
function isThenable(value) {
  return value !== null && typeof value === "object" && typeof value.then === "function";
}

/**
 * Calls an optional hook; a throw or a rejected promise is reported.
 * @param {Widget} widget
 * @param {"loaded"|"detached"} name
 */
function callHook(widget, name) {
  try {
    const result = widget[name]();
    if (isThenable(result)) result.then(undefined, reportError);
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
    /** The widget's root element. @type {HTMLElement} */
    this.node = node;
    /** The server-side element id (data-athena-widget). @type {number} */
    this.widgetId = Number(node.getAttribute("data-athena-widget"));
    /** @type {Widget|null} */
    this.widgetParent = null;
    /** @type {Widget[]} */
    this.childWidgets = [];
    widgetsByNode.set(node, this);
    if (Number.isInteger(this.widgetId)) widgetsById.set(this.widgetId, this);
    bindEvents(this);
  }

  /**
   * The widget owning `node`: the nearest widget root at or above it.
   * @param {Node|null} node
   * @returns {Widget|null}
   */
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
   * @param {...any} args JSON-serializable arguments, captured at call time
   * @returns {Promise<any>} the return value (LiveElements arrive as Widgets);
   *   rejects with RemoteError, TimeoutError or ConnectionLost
   */
  callRemote(method, ...args) {
    return this.callRemoteWithOptions(method, args);
  }

  /**
   * Calls an exposed method with keyword arguments.
   * @param {string} method
   * @param {Record<string, any>} kwargs
   * @returns {Promise<any>} as {@link Widget#callRemote}
   */
  callRemoteKw(method, kwargs) {
    return this.callRemoteWithOptions(method, [], kwargs);
  }

  /**
   * The general form of callRemote: positional and keyword arguments and
   * per-call options. The timeout runs from now, also while the call waits
   * offline; a call that times out before it was sent is never sent.
   * @param {string} method
   * @param {any[]} [args]
   * @param {Record<string, any>} [kwargs]
   * @param {CallOptions} [options]
   * @returns {Promise<any>} as {@link Widget#callRemote}
   */
  callRemoteWithOptions(method, args = [], kwargs = {}, options = {}) {
    if (typeof method !== "string" || !method) {
      return Promise.reject(new TypeError("callRemote: method must be a non-empty string"));
    }
    const timeoutMs = options.timeoutMs ?? config?.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    return enqueue({ type: "call", widget: this.widgetId, method, args, kwargs }, timeoutMs, false);
  }

  /**
   * Constructs a widget from a widget value (or adopts an already built
   * Widget) as a child of this one. The caller inserts `widget.node`.
   * @param {WidgetInfo|Widget} info
   * @returns {Promise<Widget>}
   */
  async addChildWidget(info) {
    if (info instanceof Widget) {
      link(info, this);
      return info;
    }
    if (!isWidgetValue(info)) {
      throw new TypeError('addChildWidget expects a Widget or a widget value {"$athena": "widget", ...}');
    }
    const [widget] = await buildWidgets([{ info, parent: this }]);
    return widget;
  }

  /**
   * Detaches this widget on both sides: runs detached() hooks (children
   * first), unregisters it and removes its node at once, and tells the server.
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

/**
 * Sets `widget.widgetParent`, keeping both parents' childWidgets in step.
 * @param {Widget} widget
 * @param {Widget|null} parent
 */
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

/**
 * Local half of a detach (browser- or server-initiated): hooks children
 * first, unregister, remove from the document.
 * @param {Widget} widget
 */
function teardown(widget) {
  const root = widget.node;
  /** @param {Widget} w */
  const visit = (w) => {
    for (const child of [...w.childWidgets]) visit(child);
    callHook(w, "detached");
    forgetNode(w.node);
    // A child's node moved elsewhere (a dialog on <body>) goes too.
    if (w !== widget && !root.contains(w.node)) w.node.remove();
  };
  visit(widget);
  link(widget, null);
  root.remove();
}

/**
 * Binds `data-athena-on="event:method ..."` on the widget's node and on the
 * descendants it owns; subtrees of nested widgets belong to those widgets.
 * @param {Widget} widget
 */
function bindEvents(widget) {
  const root = widget.node;
  const walker = root.ownerDocument.createTreeWalker(root, NodeFilter.SHOW_ELEMENT, {
    acceptNode: (el) => (el !== root && /** @type {Element} */ (el).hasAttribute("data-athena-widget")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  for (let el = /** @type {Element|null} */ (root); el; el = /** @type {Element|null} */ (walker.nextNode())) {
    const spec = el.getAttribute("data-athena-on");
    if (!spec) continue;
    for (const token of spec.trim().split(/\s+/)) {
      const colon = token.indexOf(":");
      if (colon <= 0 || colon === token.length - 1) {
        reportError(new SyntaxError(`athena: bad data-athena-on entry "${token}" (expected event:method)`));
        continue;
      }
      const type = token.slice(0, colon);
      const method = token.slice(colon + 1);
      el.addEventListener(type, (event) => handleDomEvent(widget, method, event));
    }
  }
}

/**
 * @param {Widget} widget
 * @param {string} method
 * @param {Event} event
 */
function handleDomEvent(widget, method, event) {
  if (event.type === "submit") event.preventDefault();
  if (widgetsByNode.get(widget.node) !== widget) return; // detached or failed construction
  const fn = /** @type {any} */ (widget)[method];
  if (typeof fn !== "function") {
    reportError(new TypeError(`athena: ${widget.constructor.name} has no method "${method}" (data-athena-on)`));
    return;
  }
  try {
    const result = fn.call(widget, event);
    // The handler's promise has no other owner: its rejection is ours to report.
    if (isThenable(result)) result.then(undefined, reportError);
  } catch (error) {
    reportError(error);
  }
}

// ---- Loading and constructing widgets ---------------------------------------

/** @param {Element} node */
function moduleUrl(node) {
  return new URL(node.getAttribute("data-athena-module") || "", document.baseURI).href;
}

/**
 * Imports every distinct module of `nodes` in parallel; never rejects (a
 * failure is recorded and reported per widget when it is constructed).
 * @param {Element[]} nodes
 */
function loadModules(nodes) {
  const urls = new Set(nodes.map(moduleUrl));
  return Promise.all([...urls].map((url) => {
    let load = moduleLoads.get(url);
    if (!load) {
      load = import(url).then(
        (module) => { moduleResults.set(url, { module }); },
        (error) => { moduleResults.set(url, { error }); });
      moduleLoads.set(url, load);
    }
    return load;
  }));
}

/**
 * @param {Element} node whose module is loaded
 * @returns {new (node: HTMLElement, ...args: any[]) => Widget}
 */
function resolveClass(node) {
  const spec = node.getAttribute("data-athena-class") || "";
  const name = spec.slice(spec.lastIndexOf(".") + 1);
  const url = moduleUrl(node);
  const where = `widget ${node.getAttribute("data-athena-widget")} (${spec})`;
  const result = moduleResults.get(url);
  if (!result || "error" in result) {
    throw new Error(`athena: ${where}: module ${url} failed to load`, { cause: result?.error });
  }
  const cls = result.module[name];
  if (typeof cls !== "function") throw new Error(`athena: ${where}: module ${url} has no export "${name}"`);
  if (cls !== Widget && !(cls.prototype instanceof Widget)) {
    throw new TypeError(`athena: ${where}: "${name}" does not extend Widget from ${import.meta.url}` +
      ' (does the import map send "athena" to this same URL?)');
  }
  return cls;
}

/**
 * Constructs the widgets of `nodes` (document order, so parents first),
 * links them by DOM ancestry, then calls loaded() on each.
 * @param {HTMLElement[]} nodes modules already loaded
 * @param {Widget|null} rootParent parent of nodes[0] when no ancestor is a widget
 * @param {boolean} strict throw if nodes[0] fails (a widget value), else report and skip
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
    const parent = Widget.get(node.parentNode) ?? (node === nodes[0] ? rootParent : null);
    link(widget, parent);
    built.push(widget);
  }
  for (const widget of built) callHook(widget, "loaded");
  return built;
}

/**
 * Builds widget values into detached, constructed Widgets (modules loaded on
 * demand, all values' modules in parallel).
 * @param {{info: WidgetInfo, parent: Widget|null}[]} items
 * @returns {Promise<Widget[]>}
 */
async function buildWidgets(items) {
  const trees = items.map(({ info }) => {
    if (typeof info.html !== "string") throw new TypeError("athena: widget value without html");
    const template = document.createElement("template");
    // Server-rendered markup: the one place the runtime parses HTML.
    template.innerHTML = info.html;
    const root = template.content.firstElementChild;
    if (!root || !root.hasAttribute("data-athena-widget")) {
      throw new Error(`athena: widget value ${info.id} has no data-athena-widget root`);
    }
    const node = /** @type {HTMLElement} */ (document.adoptNode(root));
    return [node, .../** @type {NodeListOf<HTMLElement>} */ (node.querySelectorAll(WIDGET_SELECTOR))];
  });
  await Promise.all(trees.map(loadModules));
  return trees.map((nodes, i) => constructWidgets(nodes, items[i].parent, true)[0]);
}

/**
 * Replaces every widget value inside freshly parsed JSON by its Widget
 * (in place; the JSON is ours). Plain data costs one synchronous walk.
 * @param {any} value
 * @returns {Promise<any>}
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
    info,
    parent: typeof info.parent === "number" ? widgetsById.get(info.parent) ?? null : null,
  })));
  refs.forEach((ref, i) => { ref.holder[ref.key] = widgets[i]; });
  return box.value;
}

// ---- Calls lane (sequenced: call, detach) -----------------------------------

/**
 * @param {object} message without seq
 * @param {number} timeoutMs
 * @param {boolean} isDetach
 * @returns {Promise<any>}
 */
function enqueue(message, timeoutMs, isDetach) {
  if (!config) return Promise.reject(new ConnectionLost("athena: no page on this document (no athena-config meta)"));
  if (isGone()) return Promise.reject(new ConnectionLost("athena: the page is gone"));
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
    const entry = { json, seq: 0, isDetach, timeoutMs, settled: false, timer: undefined, resolve, reject };
    entry.timer = setTimeout(() => expire(entry), timeoutMs);
    callQueue.push(entry);
    scheduleCallsFlush();
  });
}

/**
 * @param {Outgoing} entry
 * @param {() => void} action
 */
function settle(entry, action) {
  if (entry.settled) return;
  entry.settled = true;
  clearTimeout(entry.timer);
  action();
}

/** @param {Outgoing} entry */
function expire(entry) {
  // Unsent calls are dropped: the caller was told it failed, so running it
  // later would surprise. A detach is still sent: the server must free it.
  if (entry.seq === 0 && !entry.isDetach) callQueue = callQueue.filter((e) => e !== entry);
  settle(entry, () => entry.reject(new TimeoutError(`athena: no answer within ${entry.timeoutMs} ms`)));
}

function scheduleCallsFlush() {
  if (callsFlushScheduled) return;
  callsFlushScheduled = true;
  queueMicrotask(flushCalls); // batch everything called in this task
}

function flushCalls() {
  callsFlushScheduled = false;
  if (inflight || !config || isGone() || callQueue.length === 0) return;
  /** @type {Outgoing[]} */
  const batch = [];
  let bytes = 0;
  while (callQueue.length && batch.length < MAX_BATCH_MESSAGES) {
    const entry = callQueue[0];
    if (batch.length && bytes + entry.json.length > MAX_BATCH_BYTES) break; // big ones go alone
    callQueue.shift();
    entry.seq = nextSeq++;
    bytes += entry.json.length;
    batch.push(entry);
  }
  inflight = batch;
  postCalls(batch);
}

/** @param {Outgoing} entry */
function wireJson(entry) {
  return `{"seq":${entry.seq},${entry.json.slice(1)}`; // json is a non-empty object
}

/**
 * Sends (or re-sends, with the same seqs) a batch and handles the reply.
 * @param {Outgoing[]} batch
 */
async function postCalls(batch) {
  const timeoutMs = Math.max(...batch.map((e) => e.timeoutMs)) + CALLS_POST_SLACK_MS;
  const reply = await post(batch.map(wireJson), timeoutMs);
  if (inflight !== batch || isGone()) return;
  const kind = classify(reply);
  const body = reply?.body;
  if (kind === "results") {
    inflight = null;
    callsRetry.reset();
    gapResends = 0;
    applyCallResults(batch, body.results);
  } else if (kind === "gone") {
    goGone(body?.error?.code ?? `http-${reply?.status}`);
    return;
  } else if (kind === "gap") {
    inflight = null;
    const expected = body?.error?.expected ?? body?.expected;
    if (Number.isInteger(expected) && expected >= 1 && expected < batch[0].seq && gapResends < MAX_GAP_RESENDS) {
      // The server never looked at this batch: renumber it from `expected`.
      gapResends += 1;
      for (const e of batch) e.seq = 0;
      callQueue = batch.filter((e) => !e.settled || e.isDetach).concat(callQueue);
      nextSeq = expected;
    } else {
      rejectBatch(batch, reply);
      nextSeq = Number.isInteger(expected) && expected >= 1 ? expected : batch[0].seq;
    }
  } else if (kind === "rejected") {
    // Nothing in the batch was looked at: its seqs are free for the next one.
    inflight = null;
    rejectBatch(batch, reply);
    nextSeq = batch[0].seq;
  } else {
    // Lost response, network down, 5xx: the same seqs again; the server
    // answers the ones it already ran from its record.
    callsRetry.schedule();
    return;
  }
  scheduleCallsFlush();
}

/**
 * @param {Outgoing[]} batch
 * @param {Reply|null} reply
 */
function rejectBatch(batch, reply) {
  for (const entry of batch) {
    entry.seq = 0;
    settle(entry, () => entry.reject(remoteError(reply?.body?.error, `http-${reply?.status}`)));
  }
}

/**
 * @param {Outgoing[]} batch
 * @param {any[]} results
 */
function applyCallResults(batch, results) {
  const bySeq = new Map(batch.map((e) => [e.seq, e]));
  for (const result of results) {
    const entry = result && bySeq.get(result.seq);
    if (!entry) continue; // unknown or duplicate seq
    bySeq.delete(result.seq);
    if (result.error) {
      const error = remoteError(result.error, "remote-error");
      // The server already lost the widget (it detached it too): that's done.
      if (entry.isDetach && error.code === "widget-not-found") settle(entry, () => entry.resolve(undefined));
      else settle(entry, () => entry.reject(error));
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

/**
 * @param {any} error the wire error object
 * @param {string} fallbackCode
 */
function remoteError(error, fallbackCode) {
  const e = error !== null && typeof error === "object" ? error : {};
  const code = typeof e.code === "string" ? e.code : fallbackCode;
  const remoteName = typeof e.name === "string" ? e.name : "RemoteError";
  return new RemoteError(typeof e.message === "string" && e.message ? e.message : code, { code, remoteName });
}

/**
 * @param {Reply|null} reply
 * @returns {"results"|"gone"|"gap"|"rejected"|"retry"}
 */
function classify(reply) {
  if (!reply) return "retry";
  const { status: http, body } = reply;
  const code = body?.error?.code;
  // A results list with a 4xx status: the batch was consumed, each call answered.
  if (Array.isArray(body?.results) && (http < 300 || (http >= 400 && http < 500))) return "results";
  if (http === 410 || code === "page-gone" || code === "page-not-found") return "gone";
  if (http === 409) return "gap";
  if (http >= 400 && http < 500 && !RETRY_STATUSES.has(http)) return "rejected";
  return "retry";
}

/**
 * One POST to the calls endpoint; null on network failure or timeout.
 * @param {string[]} messages serialized messages
 * @param {number} timeoutMs
 * @returns {Promise<Reply|null>}
 */
async function post(messages, timeoutMs) {
  const cfg = /** @type {AthenaConfig} */ (config);
  const body = `{"ack":${lastEventId},"messages":[${messages.join(",")}]}`;
  ackedId = Math.max(ackedId, lastEventId);
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs); // a dead TCP connection must not stall a lane
  try {
    const response = await fetch(cfg.calls, {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
      headers: { "Content-Type": "application/json", "X-Athena-Token": cfg.token },
      body,
      signal: abort.signal,
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
    goGone(reply?.body?.error?.code ?? `http-${reply?.status}`);
    return;
  } else if (kind === "retry") {
    // Results are idempotent on the server: resending is always safe.
    controlQueue = messages.concat(controlQueue);
    ackWanted = true;
    controlRetry.schedule();
    return;
  } else {
    reportError(remoteError(reply?.body?.error, `http-${reply?.status}`));
  }
  if (controlQueue.length || ackWanted) scheduleControlFlush();
}

/**
 * Queues the answer to a server → browser call.
 * @param {number|null} callId
 * @param {{ok: any}|{error: unknown}} outcome
 */
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
  if (!json && "error" in outcome) {
    const e = /** @type {any} */ (outcome.error);
    const name = e instanceof Error ? e.name : "Error";
    const message = e instanceof Error ? e.message : String(e);
    json = JSON.stringify({ type: "result", call: callId, error: { name, message } });
  }
  controlQueue.push(/** @type {string} */ (json));
  scheduleControlFlush();
}

/** A standalone ack when no POST carries one soon: debounced, or at once after many. */
function maybeAck() {
  const unacked = lastEventId - ackedId;
  if (unacked <= 0) return;
  if (unacked >= ACK_EVERY_MESSAGES) {
    clearTimeout(ackTimer);
    ackTimer = undefined;
    ackWanted = true;
    scheduleControlFlush();
  } else if (ackTimer === undefined) {
    ackTimer = setTimeout(() => {
      ackTimer = undefined;
      if (lastEventId > ackedId) {
        ackWanted = true;
        scheduleControlFlush();
      }
    }, ACK_DELAY_MS);
  }
}

// ---- Event stream (server → browser) ----------------------------------------

function openStream() {
  if (!config || stream || isGone() || unloading || frozen) return;
  // A new EventSource sends no Last-Event-ID, so say it in the query; the
  // EventSource's own reconnects add the header, which the server prefers.
  const url = new URL(config.events, document.baseURI);
  url.searchParams.set("last", String(lastEventId));
  const es = new EventSource(url.href);
  stream = es;
  armWatchdog();
  es.addEventListener("open", () => { if (es === stream) onStreamOpen(); });
  es.addEventListener("message", (event) => { if (es === stream) onStreamMessage(event); });
  es.addEventListener("heartbeat", () => { if (es === stream) armWatchdog(); });
  es.addEventListener("gone", (event) => {
    if (es !== stream) return;
    let reason = "gone";
    try { reason = String(JSON.parse(/** @type {MessageEvent} */ (event).data).reason ?? reason); } catch { /* keep default */ }
    goGone(reason);
  });
  es.addEventListener("error", () => {
    if (es !== stream) return;
    setDisconnected();
    // CONNECTING: the EventSource retries by itself. CLOSED: the server
    // answered non-200 or a wrong type, and it will not; we take over.
    if (es.readyState === EventSource.CLOSED) {
      closeStream();
      streamRetry.schedule();
    }
  });
}

function closeStream() {
  clearTimeout(watchdog);
  if (stream) stream.close();
  stream = null;
}

/** Heartbeats exist because a dead connection is otherwise silent. */
function armWatchdog() {
  clearTimeout(watchdog);
  const cfg = /** @type {AthenaConfig} */ (config);
  watchdog = setTimeout(() => {
    closeStream();
    setDisconnected();
    streamRetry.schedule();
  }, cfg.heartbeatMs * HEARTBEAT_TOLERANCE);
}

function onStreamOpen() {
  streamRetry.reset();
  armWatchdog();
  const wasConnected = status === "connected";
  setStatus("connected");
  hideBanner();
  if (!everConnected) {
    everConnected = true;
    dispatch("athena:connected", {});
  } else if (!wasConnected) {
    dispatch("athena:reconnected", {});
  }
  // The network is back: don't make waiting POSTs sit out their backoff.
  callsRetry.fireNow();
  controlRetry.fireNow();
}

/** @param {MessageEvent} event */
function onStreamMessage(event) {
  armWatchdog();
  const id = Number(event.lastEventId);
  if (!Number.isSafeInteger(id) || id <= 0) {
    reportError(new Error(`athena: stream message without a valid id (${event.lastEventId})`));
    return;
  }
  if (id <= lastEventId) return; // already received (replay overlap)
  if (id !== lastEventId + 1 && eventGapResyncs < MAX_EVENT_GAP_RESYNCS) {
    // Ids have no gaps, so something was lost: ask for a replay from ours.
    eventGapResyncs += 1;
    closeStream();
    openStream();
    return;
  }
  if (id !== lastEventId + 1) reportError(new Error(`athena: events ${lastEventId + 1}..${id - 1} were lost`));
  eventGapResyncs = 0;
  lastEventId = id;
  /** @type {any} */
  let message;
  try {
    message = JSON.parse(event.data);
  } catch (error) {
    reportError(error);
  }
  // Applying a message may wait for a module import; the chain keeps the
  // next message from overtaking it.
  if (message !== undefined) inbox = inbox.then(() => applyMessage(message)).catch(reportError);
  maybeAck();
}

/** @param {any} message */
async function applyMessage(message) {
  if (message?.type === "call") return applyCall(message);
  if (message?.type === "detach") {
    const widget = widgetsById.get(message.widget);
    if (widget) teardown(widget);
    return;
  }
  throw new Error(`athena: unknown message type ${JSON.stringify(message?.type)}`);
}

/** @param {any} message */
async function applyCall(message) {
  const callId = Number.isInteger(message.call) ? message.call : null;
  /** @type {Promise<any>} */
  let outcome;
  try {
    const args = await decodeValues(Array.isArray(message.args) ? message.args : []);
    const [fn, target] = resolveTarget(message.widget, message.method);
    outcome = Promise.resolve(fn.apply(target, args));
  } catch (error) {
    outcome = Promise.reject(error);
  }
  // Not awaited: a slow method (one that waits for the user, say) must not
  // hold up the messages after it. It was *started* in order, which is the
  // ordering guarantee.
  outcome.then((ok) => sendResult(callId, { ok }), (error) => sendResult(callId, { error }));
}

/**
 * @param {number|null} widgetId
 * @param {string} method
 * @returns {[Function, any]}
 */
function resolveTarget(widgetId, method) {
  if (widgetId === null || widgetId === undefined) {
    const fn = globalFunctions.get(method);
    if (!fn) throw new RemoteError(`no global function "${method}" is registered`, { code: "method-not-found" });
    return [fn, undefined];
  }
  const widget = widgetsById.get(widgetId);
  if (!widget) throw new RemoteError(`no widget ${widgetId} on this page`, { code: "widget-not-found" });
  const fn = typeof method === "string" ? /** @type {any} */ (widget)[method] : undefined;
  const callable = typeof fn === "function" && method !== "constructor" && !method.startsWith("_")
    && fn !== /** @type {any} */ (Object.prototype)[method];
  if (!callable) {
    throw new RemoteError(`${widget.constructor.name} has no method "${method}"`, { code: "method-not-found" });
  }
  return [fn, widget];
}

// ---- Status, banner, gone ---------------------------------------------------

/** A function, not a comparison, so TypeScript does not narrow across awaits. */
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
  // Short blips (a stream replaced, a proxy timeout) should not flash a banner.
  bannerTimer = setTimeout(() => { if (status === "disconnected") showBanner("disconnected"); }, BANNER_DELAY_MS);
}

/** @param {"disconnected"|"gone"} state */
function showBanner(state) {
  if (!banner) {
    if (!document.body) return;
    banner = document.createElement("div");
    banner.className = "athena-banner";
    banner.setAttribute("role", "status");
    banner.setAttribute("aria-live", "polite");
    const text = document.createElement("span");
    text.className = "athena-banner-text";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "athena-banner-reload";
    button.textContent = BANNER_RELOAD_LABEL;
    button.addEventListener("click", () => location.reload());
    banner.append(text, button);
    document.body.append(banner);
  }
  banner.setAttribute("data-athena-banner", state);
  /** @type {HTMLElement} */ (banner.querySelector(".athena-banner-text")).textContent =
    state === "gone" ? BANNER_GONE_TEXT : BANNER_DISCONNECTED_TEXT;
  /** @type {HTMLElement} */ (banner.querySelector(".athena-banner-reload")).hidden = state !== "gone";
  banner.hidden = false;
}

function hideBanner() {
  clearTimeout(bannerTimer);
  if (banner) banner.hidden = true;
}

/**
 * Replay is impossible: fail everything pending, stop, reload (jitter, loop
 * guard) unless a listener of athena:gone prevents it.
 * @param {string} reason
 */
function goGone(reason) {
  if (isGone()) return;
  setStatus("gone");
  closeStream();
  for (const timer of [streamRetry, callsRetry, controlRetry]) timer.reset();
  clearTimeout(ackTimer);
  clearTimeout(bannerTimer);
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
    const delay = RELOAD_JITTER_MIN_MS + Math.random() * (RELOAD_JITTER_MAX_MS - RELOAD_JITTER_MIN_MS);
    setTimeout(() => location.reload(), delay); // jitter: a restarted server is not hit by every tab at once
  }
}

/** Loop guard: at most RELOAD_GUARD_MAX automatic reloads per window, per tab. */
function reloadAllowed() {
  try {
    const now = Date.now();
    const raw = JSON.parse(sessionStorage.getItem(RELOAD_GUARD_KEY) || "[]");
    const recent = (Array.isArray(raw) ? raw : []).filter((t) => typeof t === "number" && now - t < RELOAD_GUARD_WINDOW_MS);
    if (recent.length >= RELOAD_GUARD_MAX) return false;
    recent.push(now);
    sessionStorage.setItem(RELOAD_GUARD_KEY, JSON.stringify(recent));
    return true;
  } catch {
    return false; // no storage, no guard: let the person press Reload
  }
}

// ---- Page lifecycle ---------------------------------------------------------

/** @param {PageTransitionEvent} event */
function onPageHide(event) {
  const cfg = /** @type {AthenaConfig} */ (config);
  streamRetry.reset();
  closeStream();
  if (event.persisted) { // back/forward cache: the page may come back
    frozen = true;
    return;
  }
  unloading = true;
  if (isGone()) return;
  const body = JSON.stringify({ token: cfg.token });
  const sent = navigator.sendBeacon?.(cfg.close, new Blob([body], { type: "application/json" }));
  if (!sent) {
    fetch(cfg.close, {
      method: "POST", keepalive: true, credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body,
    }).catch(() => { /* the page is unloading; the server's page timeout closes it */ });
  }
}

/** @param {PageTransitionEvent} event */
function onPageShow(event) {
  if (!event.persisted || !frozen) return;
  frozen = false;
  if (status !== "gone") setStatus("connecting");
  openStream(); // the server may have closed the page meanwhile: then "gone"
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
      debug: Boolean(raw.debug),
    };
  } catch (error) {
    console.error("athena: bad athena-config meta tag:", error);
    return null;
  }
}

async function boot() {
  config = readConfig(); // at once, so widget constructors can callRemote
  if (!config) return; // imported on a page without a LivePage: stay inert
  setStatus("connecting");
  window.addEventListener("pagehide", onPageHide);
  window.addEventListener("pageshow", onPageShow);
  window.addEventListener("online", () => {
    callsRetry.fireNow();
    controlRetry.fireNow();
    streamRetry.fireNow();
  });
  window.addEventListener("unhandledrejection", (event) => {
    const error = event.reason;
    if (error instanceof RemoteError || error instanceof TimeoutError || error instanceof ConnectionLost) {
      // The browser logs it already; a listener that cancels athena:error silences that too.
      if (!dispatch("athena:error", { error }, true)) event.preventDefault();
    }
  });
  if (document.readyState === "loading") {
    await new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));
  }
  const nodes = [.../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(WIDGET_SELECTOR))];
  await loadModules(nodes);
  const built = constructWidgets(nodes, null, false);
  dispatch("athena:ready", { widgets: built });
  openStream();
}

// ---- Public namespace -------------------------------------------------------

/**
 * The page-level runtime.
 * @namespace
 */
export const Athena = Object.freeze({
  /**
   * Registers a page-level function the server calls with
   * `page.call_remote(name, *args)` (messages with `widget: null`).
   * @param {string} name
   * @param {Function} fn may return a Promise; its value answers the server
   */
  registerGlobal(name, fn) {
    if (typeof name !== "string" || !name) throw new TypeError("registerGlobal: name must be a non-empty string");
    if (typeof fn !== "function") throw new TypeError(`registerGlobal("${name}"): fn must be a function`);
    globalFunctions.set(name, fn);
  },

  /**
   * A read-only snapshot of the runtime, for tests and debugging.
   * @returns {{id: string|null, status: string, lastEventId: number, nextSeq: number,
   *   queued: number, widgets: Map<number, Widget>}}
   */
  get page() {
    return Object.freeze({
      id: config?.page ?? null,
      status,
      lastEventId,
      nextSeq,
      queued: callQueue.length,
      widgets: new Map(widgetsById),
    });
  },

  /**
   * Connection state, as in `<html data-athena-status>`:
   * "idle" (no page) | "connecting" | "connected" | "disconnected" | "gone".
   * @returns {string}
   */
  get connection() {
    return status;
  },

  /**
   * Every live widget of the page, in construction order.
   * @returns {Widget[]}
   */
  widgets() {
    return [...widgetsById.values()];
  },
});

if (typeof document !== "undefined") boot().catch(reportError);
