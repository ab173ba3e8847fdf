'use strict';
/**
 * flask_athena browser runtime: Nevow Athena "live elements" for Flask. One
 * no-build ES module, no dependencies; it implements docs/protocol.rst.
 *
 * DOM events on `document`: athena:ready, athena:connected, athena:disconnected,
 * athena:reconnected, athena:gone (cancelable: no reload, no banner),
 * athena:error (cancelable: no console log). `<html data-athena-status>`:
 * connecting | connected | disconnected | gone.
 *
 * All state lives in one {@link Runtime}, built by `boot()` when the module
 * loads in a browser, from the browser's `fetch`, `EventSource`, `document`,
 * `window`, `navigator`, timers and clock (a {@link RuntimeEnv}). Tests build
 * their own Runtime from fakes (tests/js/, `node --test`), as Phoenix's Socket
 * takes its transport.
 *
 * Two POST lanes share the calls endpoint. The *calls lane* carries sequenced
 * messages (call, detach), one POST in flight at a time, so the server sees
 * them in order without a reorder buffer. The *control lane* carries results
 * of server → browser calls and acks; it never waits behind the calls lane,
 * because an exposed method may be blocked waiting for exactly such a result.
 *
 * @module athena
 */

// ---- Public surface ----------------------------------------------------------
//
// Widget      base class of JS widgets (callRemote, detach, hooks)
// Athena      the page-level namespace (registerGlobal, callSignal, page, connection, widgets)
// RemoteError, TimeoutError, ConnectionLost   what callRemote rejects with
// Runtime     the runtime of one page, built from a RuntimeEnv (for tests and embedding)
// RetryTimer, backoffMs, browserEnv, readConfig   its parts, exported for the same reason
export {
  Widget, Athena, RemoteError, TimeoutError, ConnectionLost,
  Runtime, RetryTimer, backoffMs, browserEnv, readConfig,
};

import { StreamHub, sharedSourceClass } from "./athena-shared.js";

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
 * The JSON object of `<meta name="athena-config">`. `shared`: the tabs of
 * this session share one event stream (athena-shared.js), or null.
 * @typedef {{page: string, token: string, events: string, calls: string, close: string,
 *   heartbeatMs: number, callTimeoutMs: number, ackEvery: number, debug: boolean,
 *   shared: {events: string, key: string}|null}} AthenaConfig
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
 * What {@link RuntimeEnv} needs of an EventSource class: `new` and `CLOSED`;
 * `reconnects`: its sources come back by themselves after an error (a
 * shared stream's leader reconnects for every tab), so the Runtime waits.
 * @typedef {{new (url: string): EventSource, readonly CLOSED: number, readonly reconnects?: boolean}} EventSourceClass
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

// ---- Errors ----------------------------------------------------------------

/** A browser → server call failed on the server, or the request was refused. */
class RemoteError extends Error {
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
class TimeoutError extends Error {
  /** @param {string} message */
  constructor(message) { super(message); this.name = "TimeoutError"; this.code = "call-timeout"; }
}

/** The page is gone (closed, expired, server restarted) or the offline queue is full. */
class ConnectionLost extends Error {
  /** @param {string} message */
  constructor(message) { super(message); this.name = "ConnectionLost"; this.code = "connection-lost"; }
}

// ---- Retry policy (phoenix's Timer) ----------------------------------------

/**
 * Backoff with jitter and a cap: an outage never meets a retry storm.
 * @param {number} tries from 1 @param {() => number} [random] uniform in [0, 1)
 * @returns {number} milliseconds to wait before try `tries`
 */
function backoffMs(tries, random = Math.random) {
  const base = RETRY_STEPS_MS[Math.min(Math.max(tries, 1), RETRY_STEPS_MS.length) - 1];
  return Math.round(base * (1 + RETRY_JITTER * (2 * random() - 1)));
}

/** Runs `callback` after reconnectAfterMs(tries); reset() on success. */
class RetryTimer {
  /**
   * @param {Pick<RuntimeEnv, "setTimeout"|"clearTimeout">} timers
   * @param {() => void} callback
   * @param {(tries: number) => number} [reconnectAfterMs]
   */
  constructor(timers, callback, reconnectAfterMs = backoffMs) {
    this.timers = timers;
    this.callback = callback;
    this.reconnectAfterMs = reconnectAfterMs;
    /** Retries scheduled since the last reset(). */
    this.tries = 0;
    this.handle = /** @type {Timer} */ (undefined);
  }
  /** A retry is scheduled and has not run yet. */
  get pending() { return this.handle !== undefined; }
  /** Forgets the tries and cancels a scheduled retry. */
  reset() { this.tries = 0; this.timers.clearTimeout(this.handle); this.handle = undefined; }
  /** Schedules the next try, after a longer wait than the last. */
  schedule() {
    this.timers.clearTimeout(this.handle);
    this.tries += 1;
    this.handle = this.timers.setTimeout(() => { this.handle = undefined; this.callback(); },
      this.reconnectAfterMs(this.tries));
  }
  /** Skips the wait (the network came back). */
  fireNow() {
    if (!this.pending) return;
    this.reset();
    this.callback();
  }
}

// ---- The runtime of this document ------------------------------------------

/** Set once by boot(); Widget and Athena reach the page through it. */
let current = /** @type {Runtime|null} */ (null);
/** This tab's part in the shared event stream (athena-shared.js), or null: a stream of its own. */
let sharing = /** @type {StreamHub|null} */ (null);

/** @returns {Runtime} */
function runtime() {
  if (!current) throw new Error("athena: the runtime is not booted (athena.js boots when it loads in a browser)");
  return current;
}

/** Fires a cancelable `athena:error`; logs unless a listener prevented it. @param {unknown} error */
function reportError(error) {
  if (current) current.reportError(error);
  else console.error("athena:", error);
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
class Widget {
  /** @param {HTMLElement} node the element carrying data-athena-widget */
  constructor(node) {
    const rt = runtime();
    /** The widget's root element. */
    this.node = node;
    /** The server element's id (data-athena-widget). */
    this.widgetId = Number(node.getAttribute("data-athena-widget"));
    this.widgetParent = /** @type {Widget|null} */ (null);
    this.childWidgets = /** @type {Widget[]} */ ([]);
    rt.widgetsByNode.set(node, this);
    if (Number.isInteger(this.widgetId)) rt.widgetsById.set(this.widgetId, this);
    bindEvents(rt, this);
  }

  /** The widget owning `node`: the nearest widget root at or above it. @param {Node|null} node @returns {Widget|null} */
  static get(node) {
    return current ? current.widgetOf(node) : null;
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
    return runtime().callRemote(this.widgetId, method, args, kwargs, options);
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
    return (await runtime().buildWidgets([{ info, parent: this }]))[0];
  }

  /**
   * Detaches this widget on both sides: at once runs the detached() hooks
   * (children first), unregisters it and removes its node; tells the server.
   * @returns {Promise<void>} resolves when the server has acknowledged
   */
  detach() {
    const rt = runtime();
    if (rt.widgetsByNode.get(this.node) !== this) return Promise.resolve();
    const timeoutMs = rt.config?.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const acknowledged = rt.enqueue({ type: "detach", widget: this.widgetId }, timeoutMs, true);
    rt.teardown(this);
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

/**
 * Binds `data-athena-on="event:method ..."` on the widget's node and the
 * descendants it owns (subtrees of nested widgets belong to those).
 * @param {Runtime} rt @param {Widget} widget
 */
function bindEvents(rt, widget) {
  const root = widget.node;
  const walker = root.ownerDocument.createTreeWalker(root, NodeFilter.SHOW_ELEMENT, {
    acceptNode: (el) => (el !== root && /** @type {Element} */ (el).hasAttribute("data-athena-widget")
      ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT),
  });
  for (let el = /** @type {Element|null} */ (root); el; el = /** @type {Element|null} */ (walker.nextNode())) {
    for (const token of (el.getAttribute("data-athena-on") || "").split(/\s+/).filter(Boolean)) {
      const [type, method, extra] = token.split(":");
      if (!type || !method || extra !== undefined) {
        rt.reportError(new SyntaxError(`athena: bad data-athena-on entry "${token}" (expected event:method)`));
        continue;
      }
      el.addEventListener(type, (event) => {
        if (event.type === "submit") event.preventDefault();
        if (rt.widgetsByNode.get(widget.node) !== widget) return; // detached, or its constructor threw
        const fn = /** @type {any} */ (widget)[method];
        if (typeof fn !== "function") {
          rt.reportError(new TypeError(`athena: ${widget.constructor.name} has no method "${method}" (data-athena-on)`));
        } else {
          guarded(() => fn.call(widget, event)); // nobody else owns the handler's promise
        }
      });
    }
  }
}

/**
 * Builds `message.json` of the calls lane with its seq: `json` is a non-empty
 * object, so the seq goes in front of its first key.
 * @param {Outgoing} entry
 */
function withSeq(entry) {
  return `{"seq":${entry.seq},${entry.json.slice(1)}`;
}

/** @param {any} error the wire error object @param {string} fallbackCode */
function remoteError(error, fallbackCode) {
  const e = error !== null && typeof error === "object" ? error : {};
  const code = typeof e.code === "string" ? e.code : fallbackCode;
  const remoteName = typeof e.name === "string" ? e.name : "RemoteError";
  return new RemoteError(typeof e.message === "string" && e.message ? e.message : code, { code, remoteName });
}

/**
 * What a POST's reply means for its lane.
 * @param {Reply|null} reply null: network failure or timeout
 * @returns {"results"|"gone"|"gap"|"rejected"|"retry"}
 */
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

// ---- Runtime ---------------------------------------------------------------

/**
 * The runtime of one page: its widgets, its two POST lanes, its event stream
 * and its connection status. It touches the world only through its
 * {@link RuntimeEnv}, so everything below runs in Node with fakes.
 */
class Runtime {
  /**
   * @param {RuntimeEnv} env the world: browserEnv() in a browser
   * @param {AthenaConfig|null} config null: no page on this document, stay inert
   */
  constructor(env, config) {
    /** @readonly */
    this.env = env;
    /** @readonly */
    this.config = config;
    this.status = /** @type {Status} */ ("idle");
    this.everConnected = false;
    this.unloading = false;  // final pagehide: the stream closing then is no outage
    this.closeBeacon = /** @type {Blob|null} */ (null);  // made in start(): see onPageHide
    this.closeSent = false;
    this.frozen = false;     // in the back/forward cache
    this.widgetsById = /** @type {Map<number, Widget>} */ (new Map());
    this.widgetsByNode = /** @type {WeakMap<Node, Widget>} */ (new WeakMap());
    this.globalFunctions = /** @type {Map<string, Function>} */ (new Map());
    this.moduleLoads = /** @type {Map<string, Promise<void>>} */ (new Map());
    this.moduleResults = /** @type {Map<string, {module?: any, error?: unknown}>} */ (new Map());
    /** @param {() => void} callback */
    const retry = (callback) => new RetryTimer(env, callback, (tries) => backoffMs(tries, env.random));

    // Calls lane.
    this.nextSeq = 1;
    this.callQueue = /** @type {Outgoing[]} */ ([]);
    this.inflight = /** @type {Outgoing[]|null} */ (null);  // the one batch being POSTed
    this.callsFlushScheduled = false;
    this.gapResends = 0;
    this.callsRetry = retry(() => { if (this.inflight) this.postCalls(this.inflight); });

    // Control lane.
    this.controlQueue = /** @type {string[]} */ ([]);
    this.controlInflight = false;
    this.controlFlushScheduled = false;
    this.ackWanted = false;
    this.ackTimer = /** @type {Timer} */ (undefined);
    this.controlRetry = retry(() => this.flushControl());

    // Event stream.
    this.stream = /** @type {EventSource|null} */ (null);
    this.lastEventId = 0;
    this.ackedId = 0;  // highest event id sent to the server as `ack`
    this.eventGapResyncs = 0;
    this.inbox = Promise.resolve();  // incoming messages are applied in order along this chain
    // Server → browser calls started and not yet answered, by call id: the server
    // may cancel them (or give up waiting). Bounded by the server's pending limit.
    this.runningCalls = /** @type {Map<number, AbortController>} */ (new Map());
    this.currentCallSignal = /** @type {AbortSignal|undefined} */ (undefined);  // see Athena.callSignal()
    this.watchdog = /** @type {Timer} */ (undefined);
    this.streamRetry = retry(() => this.openStream());

    this.banner = /** @type {HTMLElement|null} */ (null);
    this.bannerTimer = /** @type {Timer} */ (undefined);
  }

  // ---- Start -----------------------------------------------------------------

  /**
   * Listens to the window, constructs the document's widgets, opens the
   * event stream. Without a config it does nothing (a page with no LivePage).
   * @returns {Promise<void>}
   */
  async start() {
    const { window, document } = this.env;
    if (!this.config) return;
    this.setStatus("connecting");
    this.closeBeacon = new Blob([JSON.stringify({ token: this.config.token })], { type: "application/json" });
    // Twice, see onPageHide.
    window.addEventListener("pagehide", (event) => this.onPageHide(event));
    window.addEventListener("pagehide", (event) => this.onPageHide(event));
    window.addEventListener("pageshow", (event) => this.onPageShow(event));
    window.addEventListener("online", () => {
      for (const timer of [this.callsRetry, this.controlRetry, this.streamRetry]) timer.fireNow();
    });
    window.addEventListener("unhandledrejection", (event) => {
      const error = event.reason;
      if (error instanceof RemoteError || error instanceof TimeoutError || error instanceof ConnectionLost) {
        // The browser logs it already; cancelling athena:error silences that too.
        if (!this.dispatch("athena:error", { error }, true)) event.preventDefault();
      }
    });
    if (document.readyState === "loading") {
      await new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));
    }
    const nodes = [.../** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(WIDGET_SELECTOR))];
    await this.loadModules(nodes);
    this.dispatch("athena:ready", { widgets: this.constructWidgets(nodes, null, false) });
    this.openStream();
  }

  // ---- Errors nobody handles -------------------------------------------------

  /** Fires a cancelable `athena:error`; logs unless a listener prevented it. @param {unknown} error */
  reportError(error) {
    if (this.dispatch("athena:error", { error }, true)) console.error("athena:", error);
  }

  /** @param {string} type @param {object} detail @param {boolean} [cancelable] @returns {boolean} false if prevented */
  dispatch(type, detail, cancelable = false) {
    return this.env.document.dispatchEvent(new CustomEvent(type, { detail, cancelable }));
  }

  // ---- Widget registry, loading and constructing -------------------------------

  /** The widget owning `node`: the nearest widget root at or above it. @param {Node|null} node @returns {Widget|null} */
  widgetOf(node) {
    for (let n = node; n; n = n.parentNode) {
      const widget = this.widgetsByNode.get(n);
      if (widget) return widget;
    }
    return null;
  }

  /** @param {Node} node */
  forgetNode(node) {
    const widget = this.widgetsByNode.get(node);
    if (!widget) return;
    this.widgetsByNode.delete(node);
    if (this.widgetsById.get(widget.widgetId) === widget) this.widgetsById.delete(widget.widgetId);
  }

  /** Local half of a detach (either side's): hooks children first, unregister, remove. @param {Widget} widget */
  teardown(widget) {
    const root = widget.node;
    /** @param {Widget} w */
    const visit = (w) => {
      for (const child of [...w.childWidgets]) visit(child);
      guarded(() => w.detached());
      this.forgetNode(w.node);
      if (w !== widget && !root.contains(w.node)) w.node.remove(); // moved elsewhere (a dialog on <body>)
    };
    visit(widget);
    link(widget, null);
    root.remove();
  }

  /** @param {Element} node */
  moduleUrl(node) {
    return new URL(node.getAttribute("data-athena-module") || "", this.env.document.baseURI).href;
  }

  /** Imports the modules of `nodes` in parallel; never rejects (failures are reported per widget). @param {Element[]} nodes */
  loadModules(nodes) {
    return Promise.all([...new Set(nodes.map((node) => this.moduleUrl(node)))].map((url) => {
      let load = this.moduleLoads.get(url);
      if (!load) {
        load = this.env.importModule(url).then((module) => { this.moduleResults.set(url, { module }); },
          (error) => { this.moduleResults.set(url, { error }); });
        this.moduleLoads.set(url, load);
      }
      return load;
    }));
  }

  /** @param {Element} node whose module is loaded @returns {new (node: HTMLElement, ...args: any[]) => Widget} */
  resolveClass(node) {
    const spec = node.getAttribute("data-athena-class") || "";
    const name = spec.slice(spec.lastIndexOf(".") + 1);
    const url = this.moduleUrl(node);
    const where = `widget ${node.getAttribute("data-athena-widget")} (${spec})`;
    const result = this.moduleResults.get(url);
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
  constructWidgets(nodes, rootParent, strict) {
    /** @type {Widget[]} */
    const built = [];
    for (const node of nodes) {
      if (this.widgetsByNode.has(node)) continue;
      let widget;
      try {
        const args = JSON.parse(node.getAttribute("data-athena-args") || "[]");
        if (!Array.isArray(args)) throw new TypeError("athena: data-athena-args must be a JSON array");
        widget = new (this.resolveClass(node))(node, ...args);
      } catch (error) {
        this.forgetNode(node); // the base constructor may have registered it
        if (strict && node === nodes[0]) throw error;
        this.reportError(error);
        continue;
      }
      link(widget, this.widgetOf(node.parentNode) ?? (node === nodes[0] ? rootParent : null));
      built.push(widget);
    }
    for (const widget of built) guarded(() => widget.loaded());
    return built;
  }

  /**
   * Builds widget values into constructed Widgets, not yet in the document.
   * @param {{info: WidgetInfo, parent: Widget|null}[]} items @returns {Promise<Widget[]>}
   */
  async buildWidgets(items) {
    const { document } = this.env;
    const trees = items.map(({ info }) => {
      const template = document.createElement("template");
      template.innerHTML = String(info.html); // server-rendered markup: the one place we parse HTML
      const root = template.content.firstElementChild;
      if (!root?.hasAttribute("data-athena-widget")) throw new Error(`athena: widget value ${info.id} has no widget root`);
      const node = /** @type {HTMLElement} */ (document.adoptNode(root));
      return [node, .../** @type {NodeListOf<HTMLElement>} */ (node.querySelectorAll(WIDGET_SELECTOR))];
    });
    await Promise.all(trees.map((nodes) => this.loadModules(nodes))); // every value's modules in parallel
    return trees.map((nodes, i) => this.constructWidgets(nodes, items[i].parent, true)[0]);
  }

  /**
   * Replaces every widget value inside freshly parsed JSON by its Widget (in
   * place: the JSON is ours). Plain data costs one synchronous walk.
   * @param {any} value @returns {Promise<any>}
   */
  async decodeValues(value) {
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
    const widgets = await this.buildWidgets(refs.map(({ info }) => ({
      info, parent: typeof info.parent === "number" ? this.widgetsById.get(info.parent) ?? null : null,
    })));
    refs.forEach((ref, i) => { ref.holder[ref.key] = widgets[i]; });
    return box.value;
  }

  // ---- Calls lane (sequenced: call, detach) -----------------------------------

  /**
   * Queues a call of an exposed method of widget `widgetId` (see
   * {@link Widget#callRemoteWithOptions}).
   * @param {number} widgetId @param {string} method @param {any[]} args
   * @param {Record<string, any>} kwargs @param {CallOptions} options @returns {Promise<any>}
   */
  callRemote(widgetId, method, args, kwargs, options) {
    if (typeof method !== "string" || !method) {
      return Promise.reject(new TypeError("callRemote: method must be a non-empty string"));
    }
    const timeoutMs = options.timeoutMs ?? this.config?.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    return this.enqueue({ type: "call", widget: widgetId, method, args, kwargs }, timeoutMs, false, options.signal);
  }

  /**
   * Queues a sequenced message; its timeout runs from now, also offline.
   * @param {object} message without seq @param {number} timeoutMs @param {boolean} isDetach
   * @param {AbortSignal} [signal] @returns {Promise<any>}
   */
  enqueue(message, timeoutMs, isDetach, signal) {
    if (!this.config) return Promise.reject(new ConnectionLost("athena: no page on this document (no athena-config meta)"));
    if (this.isGone()) return Promise.reject(new ConnectionLost("athena: the page is gone"));
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.callQueue.length >= MAX_QUEUED_MESSAGES) {
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
        if (entry.seq === 0 && !isDetach) this.callQueue = this.callQueue.filter((e) => e !== entry);
        this.settle(entry, () => reject(error));
      };
      entry.timer = this.env.setTimeout(() => abandon(new TimeoutError(`athena: no answer within ${timeoutMs} ms`)), timeoutMs);
      if (signal) {
        const onAbort = () => abandon(signal.reason);
        signal.addEventListener("abort", onAbort, { once: true });
        entry.unlisten = () => signal.removeEventListener("abort", onAbort);
      }
      this.callQueue.push(entry);
      this.scheduleCallsFlush();
    });
  }

  /** @param {Outgoing} entry @param {() => void} action */
  settle(entry, action) {
    if (entry.settled) return; // a late answer after a timeout, or a duplicate
    entry.settled = true;
    this.env.clearTimeout(entry.timer);
    entry.unlisten?.();
    action();
  }

  scheduleCallsFlush() {
    if (this.callsFlushScheduled) return;
    this.callsFlushScheduled = true;
    queueMicrotask(() => this.flushCalls()); // one batch for everything called in this task
  }

  flushCalls() {
    this.callsFlushScheduled = false;
    if (this.inflight || !this.config || this.isGone() || this.callQueue.length === 0) return;
    /** @type {Outgoing[]} */
    const batch = [];
    let bytes = 0;
    while (this.callQueue.length && batch.length < MAX_BATCH_MESSAGES) {
      const entry = this.callQueue[0];
      if (batch.length && bytes + entry.json.length > MAX_BATCH_BYTES) break; // a big one goes alone
      this.callQueue.shift();
      entry.seq = this.nextSeq++;
      bytes += entry.json.length;
      batch.push(entry);
    }
    this.inflight = batch;
    this.postCalls(batch);
  }

  /** Sends (or re-sends, with the same seqs) a batch and handles the reply. @param {Outgoing[]} batch */
  async postCalls(batch) {
    const timeoutMs = Math.max(...batch.map((e) => e.timeoutMs)) + CALLS_POST_SLACK_MS;
    const reply = await this.post(batch.map(withSeq), timeoutMs);
    if (this.inflight !== batch || this.isGone()) return;
    const kind = classify(reply);
    const body = reply?.body;
    if (kind === "retry") {
      // Lost response, network down, 5xx: the same seqs again; the server
      // answers those it already ran from its record, so nothing runs twice.
      this.callsRetry.schedule();
      return;
    }
    if (kind === "gone") return this.goGone(body?.error?.code ?? `http-${reply?.status}`);
    this.inflight = null;
    if (kind === "results") {
      this.callsRetry.reset();
      this.gapResends = 0;
      this.applyCallResults(batch, body.results);
    } else if (kind === "gap") {
      const expected = body?.error?.expected ?? body?.expected;
      const valid = Number.isInteger(expected) && expected >= 1;
      if (valid && expected < batch[0].seq && this.gapResends < MAX_GAP_RESENDS) {
        // The server never looked at this batch: renumber it from `expected`.
        this.gapResends += 1;
        for (const e of batch) e.seq = 0;
        this.callQueue = batch.filter((e) => !e.settled || e.isDetach).concat(this.callQueue);
        this.nextSeq = expected;
      } else {
        this.nextSeq = valid ? expected : batch[0].seq;
        this.rejectBatch(batch, reply);
      }
    } else {
      // 4xx without results: nothing was looked at, so its seqs are free again.
      this.nextSeq = batch[0].seq;
      this.rejectBatch(batch, reply);
    }
    this.scheduleCallsFlush();
  }

  /** @param {Outgoing[]} batch @param {Reply|null} reply */
  rejectBatch(batch, reply) {
    for (const entry of batch) {
      entry.seq = 0;
      this.settle(entry, () => entry.reject(remoteError(reply?.body?.error, `http-${reply?.status}`)));
    }
  }

  /** @param {Outgoing[]} batch @param {any[]} results */
  applyCallResults(batch, results) {
    const bySeq = new Map(batch.map((e) => [e.seq, e]));
    for (const result of results) {
      const entry = result && bySeq.get(result.seq);
      if (!entry) continue; // unknown or duplicate seq
      bySeq.delete(result.seq);
      if (result.error) {
        const error = remoteError(result.error, "remote-error");
        // widget-not-found on a detach: the server had detached it too. Done.
        const done = entry.isDetach && error.code === "widget-not-found";
        this.settle(entry, () => (done ? entry.resolve(undefined) : entry.reject(error)));
      } else if (entry.isDetach) {
        this.settle(entry, () => entry.resolve(undefined));
      } else {
        this.settle(entry, () => { this.decodeValues(result.ok ?? null).then(entry.resolve, entry.reject); });
      }
    }
    for (const entry of bySeq.values()) {
      this.settle(entry, () => entry.reject(new RemoteError(`athena: no result for seq ${entry.seq}`, { code: "no-result" })));
    }
  }

  /**
   * One POST to the calls endpoint; null on network failure or timeout.
   * @param {string[]} messages serialized @param {number} timeoutMs @returns {Promise<Reply|null>}
   */
  async post(messages, timeoutMs) {
    const cfg = /** @type {AthenaConfig} */ (this.config);
    const body = `{"ack":${this.lastEventId},"messages":[${messages.join(",")}]}`;
    this.ackedId = Math.max(this.ackedId, this.lastEventId);
    const abort = new AbortController();
    const timer = this.env.setTimeout(() => abort.abort(), timeoutMs); // a dead TCP connection must not stall a lane
    try {
      const response = await this.env.fetch(cfg.calls, {
        method: "POST", credentials: "same-origin", cache: "no-store", body, signal: abort.signal,
        headers: { "Content-Type": "application/json", "X-Athena-Token": cfg.token },
      });
      let json = null;
      try { json = await response.json(); } catch { /* empty or not JSON: classify by status */ }
      return { status: response.status, body: json };
    } catch {
      return null;
    } finally {
      this.env.clearTimeout(timer);
    }
  }

  // ---- Control lane (results of server calls, acks) ---------------------------

  scheduleControlFlush() {
    if (this.controlFlushScheduled) return;
    this.controlFlushScheduled = true;
    queueMicrotask(() => this.flushControl());
  }

  async flushControl() {
    this.controlFlushScheduled = false;
    if (this.controlInflight || this.controlRetry.pending || !this.config || this.isGone()) return;
    if (this.controlQueue.length === 0 && !(this.ackWanted && this.lastEventId > this.ackedId)) return;
    const messages = this.controlQueue.slice(0, MAX_BATCH_MESSAGES);
    this.controlQueue = this.controlQueue.slice(messages.length);
    this.ackWanted = false;
    this.controlInflight = true;
    const reply = await this.post(messages, CONTROL_POST_TIMEOUT_MS);
    this.controlInflight = false;
    if (this.isGone()) return;
    const kind = classify(reply);
    if (reply && reply.status >= 200 && reply.status < 300) {
      this.controlRetry.reset();
    } else if (kind === "gone") {
      return this.goGone(reply?.body?.error?.code ?? `http-${reply?.status}`);
    } else if (kind === "retry") {
      this.controlQueue = messages.concat(this.controlQueue); // results are idempotent: resending is safe
      this.ackWanted = true;
      return this.controlRetry.schedule();
    } else {
      this.reportError(remoteError(reply?.body?.error, `http-${reply?.status}`));
    }
    if (this.controlQueue.length || this.ackWanted) this.scheduleControlFlush();
  }

  /** Queues the answer to a server → browser call. @param {number|null} callId @param {{ok: any}|{error: unknown}} outcome */
  sendResult(callId, outcome) {
    if (callId === null) { // nobody waits for a broadcast: its failure is ours to report
      if ("error" in outcome) this.reportError(outcome.error);
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
    this.controlQueue.push(/** @type {string} */ (json));
    this.scheduleControlFlush();
  }

  /** A standalone ack when no other POST carries one soon: debounced, or at once after many. */
  maybeAck() {
    const unacked = this.lastEventId - this.ackedId;
    if (unacked <= 0) return;
    const ackNow = () => {
      this.env.clearTimeout(this.ackTimer);
      this.ackTimer = undefined;
      this.ackWanted = true;
      this.scheduleControlFlush();
    };
    if (unacked >= /** @type {AthenaConfig} */ (this.config).ackEvery) ackNow();
    else if (this.ackTimer === undefined) {
      const jitter = 1 + ACK_DELAY_JITTER * (2 * this.env.random() - 1);
      this.ackTimer = this.env.setTimeout(ackNow, ACK_DELAY_MS * jitter);
    }
  }

  // ---- Event stream (server → browser) ----------------------------------------

  openStream() {
    const { config } = this;
    if (!config || this.stream || this.isGone() || this.unloading || this.frozen) return;
    // A new EventSource sends no Last-Event-ID, so say it in the query (every
    // reconnect is a new EventSource: see the "error" listener).
    const url = new URL(config.events, this.env.document.baseURI);
    url.searchParams.set("last", String(this.lastEventId));
    const es = new this.env.EventSource(url.href);
    this.stream = es;
    this.armWatchdog();
    /** @param {string} type @param {(event: MessageEvent) => void} handler */
    const on = (type, handler) => es.addEventListener(type, (event) => {
      if (es === this.stream) handler(/** @type {MessageEvent} */ (event)); // ignore a replaced stream
    });
    on("open", () => this.onStreamOpen());
    on("message", (event) => this.onStreamMessage(event));
    on("heartbeat", () => this.armWatchdog());
    on("gone", (event) => {
      let reason = "gone";
      try { reason = String(JSON.parse(event.data).reason ?? reason); } catch { /* keep the default */ }
      this.goGone(reason);
    });
    on("error", () => {
      this.setDisconnected();
      if (this.env.EventSource.reconnects) return; // the shared stream's leader reconnects (athena-shared.js)
      // One reconnect policy in every engine: ours (streamRetry's backoff). An
      // EventSource left CONNECTING retries by itself at its engine's pace, and
      // Firefox's pace plus ours made 46-63 attempts in a 5 s outage where
      // Chromium and WebKit made 9-10. So a failed stream is closed, whatever
      // its readyState, and reopened by the policy (with ?last=, see above).
      this.closeStream();
      this.streamRetry.schedule();
    });
  }

  closeStream() {
    this.env.clearTimeout(this.watchdog);
    this.stream?.close();
    this.stream = null;
  }

  /** Heartbeats exist because a dead connection is otherwise silent. */
  armWatchdog() {
    this.env.clearTimeout(this.watchdog);
    this.watchdog = this.env.setTimeout(() => {
      this.closeStream();
      this.setDisconnected();
      this.streamRetry.schedule();
    }, /** @type {AthenaConfig} */ (this.config).heartbeatMs * HEARTBEAT_TOLERANCE);
  }

  onStreamOpen() {
    this.streamRetry.reset();
    this.armWatchdog();
    const wasConnected = this.status === "connected";
    this.setStatus("connected");
    this.hideBanner();
    if (!this.everConnected) this.dispatch("athena:connected", {});
    else if (!wasConnected) this.dispatch("athena:reconnected", {});
    this.everConnected = true;
    // The network is back: waiting POSTs need not sit out their backoff.
    this.callsRetry.fireNow();
    this.controlRetry.fireNow();
  }

  /** @param {MessageEvent} event */
  onStreamMessage(event) {
    this.armWatchdog();
    const id = Number(event.lastEventId);
    if (!Number.isSafeInteger(id) || id <= 0) {
      return this.reportError(new Error(`athena: stream message without a valid id (${event.lastEventId})`));
    }
    if (id <= this.lastEventId) return; // already received (replay overlap)
    if (id !== this.lastEventId + 1) {
      if (this.eventGapResyncs < MAX_EVENT_GAP_RESYNCS) {
        this.eventGapResyncs += 1; // ids have no gaps, so something was lost: ask for a replay
        this.closeStream();
        return this.openStream();
      }
      this.reportError(new Error(`athena: events ${this.lastEventId + 1}..${id - 1} were lost`));
    }
    this.eventGapResyncs = 0;
    this.lastEventId = id;
    /** @type {any} */
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (error) {
      this.reportError(error);
    }
    // Applying a message may wait for a module import; the chain keeps the next
    // message from overtaking it.
    if (message !== undefined) {
      this.inbox = this.inbox.then(() => this.applyMessage(message)).catch((error) => this.reportError(error));
    }
    this.maybeAck();
  }

  /** @param {any} message */
  async applyMessage(message) {
    if (message?.type === "call") return this.applyCall(message);
    if (message?.type === "cancel") {
      const controller = this.runningCalls.get(message.call);
      this.runningCalls.delete(message.call);
      controller?.abort(new DOMException("athena: the server cancelled this call", "AbortError"));
      return;
    }
    if (message?.type !== "detach") throw new Error(`athena: unknown message type ${JSON.stringify(message?.type)}`);
    const widget = this.widgetsById.get(message.widget);
    if (widget) this.teardown(widget);
  }

  /** @param {any} message */
  async applyCall(message) {
    const callId = Number.isInteger(message.call) ? message.call : null;
    const controller = callId === null ? undefined : new AbortController();
    if (controller) this.runningCalls.set(/** @type {number} */ (callId), controller);
    /** @type {Promise<any>} */
    let outcome;
    try {
      const args = await this.decodeValues(Array.isArray(message.args) ? message.args : []);
      const [fn, target] = this.resolveTarget(message.widget, message.method);
      this.currentCallSignal = controller?.signal;
      try {
        outcome = Promise.resolve(fn.apply(target, args));
      } finally {
        this.currentCallSignal = undefined;
      }
    } catch (error) {
      outcome = Promise.reject(error);
    }
    /** @param {{ok: any}|{error: unknown}} result */
    const answer = (result) => {
      if (controller?.signal.aborted) return; // cancelled: the server no longer listens
      this.runningCalls.delete(/** @type {number} */ (callId));
      this.sendResult(callId, result);
    };
    // Not awaited: a slow method (one waiting for the user, say) must not hold
    // up the messages after it. It was *started* in order; that is the guarantee.
    outcome.then((ok) => answer({ ok }), (error) => answer({ error }));
  }

  /** @param {number|null} widgetId @param {string} method @returns {[Function, any]} */
  resolveTarget(widgetId, method) {
    if (widgetId === null || widgetId === undefined) {
      const fn = this.globalFunctions.get(method);
      if (!fn) throw new RemoteError(`no global function "${method}" is registered`, { code: "method-not-found" });
      return [fn, undefined];
    }
    const widget = this.widgetsById.get(widgetId);
    if (!widget) throw new RemoteError(`no widget ${widgetId} on this page`, { code: "widget-not-found" });
    const fn = typeof method === "string" ? /** @type {any} */ (widget)[method] : undefined;
    if (typeof fn !== "function" || method === "constructor" || method.startsWith("_")
        || fn === /** @type {any} */ (Object.prototype)[method]) {
      throw new RemoteError(`${widget.constructor.name} has no method "${method}"`, { code: "method-not-found" });
    }
    return [fn, widget];
  }

  // ---- Status, banner, gone ---------------------------------------------------

  /** A method, not a comparison, so TypeScript does not narrow `status` across awaits. */
  isGone() {
    return this.status === "gone";
  }

  /** @param {Status} value */
  setStatus(value) {
    this.status = value;
    this.env.document.documentElement.setAttribute("data-athena-status", value);
  }

  setDisconnected() {
    if (this.isGone() || this.status === "disconnected" || this.unloading) return;
    this.setStatus("disconnected");
    this.dispatch("athena:disconnected", {});
    this.env.clearTimeout(this.bannerTimer);
    // Short blips (a replaced stream, a proxy timeout) should not flash a banner.
    this.bannerTimer = this.env.setTimeout(() => {
      if (this.status === "disconnected") this.showBanner("disconnected");
    }, BANNER_DELAY_MS);
  }

  /** @param {"disconnected"|"gone"} state */
  showBanner(state) {
    const { document } = this.env;
    if (!document.body) return;
    if (!this.banner) {
      this.banner = Object.assign(document.createElement("div"), { className: "athena-banner" });
      this.banner.setAttribute("role", "status");
      this.banner.setAttribute("aria-live", "polite");
      const button = Object.assign(document.createElement("button"),
        { type: "button", className: "athena-banner-reload", textContent: BANNER_RELOAD_LABEL });
      button.addEventListener("click", () => this.env.location.reload());
      this.banner.append(Object.assign(document.createElement("span"), { className: "athena-banner-text" }), button);
      document.body.append(this.banner);
    }
    this.banner.setAttribute("data-athena-banner", state);
    const [text, button] = /** @type {HTMLElement[]} */ ([...this.banner.children]);
    text.textContent = state === "gone" ? BANNER_GONE_TEXT : BANNER_DISCONNECTED_TEXT;
    button.hidden = state !== "gone";
    this.banner.hidden = false;
  }

  hideBanner() {
    this.env.clearTimeout(this.bannerTimer);
    if (this.banner) this.banner.hidden = true;
  }

  /** Replay is impossible: fail all pending, stop, reload (jitter, loop guard) unless prevented. @param {string} reason */
  goGone(reason) {
    if (this.isGone()) return;
    this.setStatus("gone");
    this.closeStream();
    for (const timer of [this.streamRetry, this.callsRetry, this.controlRetry]) timer.reset();
    this.env.clearTimeout(this.ackTimer);
    this.env.clearTimeout(this.bannerTimer);
    for (const controller of this.runningCalls.values()) {
      controller.abort(new ConnectionLost(`athena: the page is gone (${reason})`));
    }
    this.runningCalls.clear();
    const pending = [...(this.inflight ?? []), ...this.callQueue];
    this.inflight = null;
    this.callQueue = [];
    this.controlQueue = [];
    for (const entry of pending) {
      this.settle(entry, () => entry.reject(new ConnectionLost(`athena: the page is gone (${reason})`)));
    }
    if (!this.dispatch("athena:gone", { reason }, true)) return;
    this.showBanner("gone");
    if (this.reloadAllowed()) {
      // Jitter: a restarted server is not hit by every tab in the same instant.
      const delayMs = RELOAD_JITTER_MIN_MS + this.env.random() * (RELOAD_JITTER_MAX_MS - RELOAD_JITTER_MIN_MS);
      this.env.setTimeout(() => this.env.location.reload(), delayMs);
    }
  }

  /** Loop guard: at most RELOAD_GUARD_MAX automatic reloads per window, per tab. */
  reloadAllowed() {
    try {
      const storage = this.env.storage();
      const now = this.env.now();
      const raw = JSON.parse(storage.getItem(RELOAD_GUARD_KEY) || "[]");
      const recent = (Array.isArray(raw) ? raw : []).filter((t) => typeof t === "number" && now - t < RELOAD_GUARD_WINDOW_MS);
      if (recent.length >= RELOAD_GUARD_MAX) return false;
      storage.setItem(RELOAD_GUARD_KEY, JSON.stringify([...recent, now]));
      return true;
    } catch {
      return false; // no storage, no guard: the person presses Reload
    }
  }

  // ---- Page lifecycle -----------------------------------------------------------

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
  onPageHide(event) {
    if (!event.persisted && !this.closeSent && !this.isGone()) this.sendCloseBeacon();
    this.streamRetry.reset();
    this.closeStream();
    if (event.persisted) { // back/forward cache: the page may come back
      this.frozen = true;
      return;
    }
    this.unloading = true;
  }

  /** Tells the server the page is closed (a beacon outlives the document). */
  sendCloseBeacon() {
    const cfg = /** @type {AthenaConfig} */ (this.config);
    const beacon = /** @type {Blob} */ (this.closeBeacon);
    if (this.env.navigator.sendBeacon?.(cfg.close, beacon)) {
      this.closeSent = true;
      return;
    }
    this.closeSent = true;
    this.env.fetch(cfg.close, {
      method: "POST", keepalive: true, credentials: "same-origin", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: cfg.token }),
    }).catch(() => { /* unloading; the server's page timeout closes the page anyway */ });
  }

  /** @param {PageTransitionEvent} event */
  onPageShow(event) {
    if (!event.persisted || !this.frozen) return;
    this.frozen = false;
    if (!this.isGone()) this.setStatus("connecting");
    this.openStream(); // if the server closed the page meanwhile, the stream says "gone"
  }
}

// ---- Boot --------------------------------------------------------------------

/**
 * The browser's own world, for the Runtime of this document.
 * @returns {RuntimeEnv}
 */
function browserEnv() {
  return {
    fetch: (url, init) => fetch(url, init),
    EventSource,
    document,
    window,
    navigator,
    location,
    storage: () => sessionStorage,
    setTimeout: (callback, ms) => setTimeout(callback, ms),
    clearTimeout: (handle) => clearTimeout(/** @type {ReturnType<typeof setTimeout>|undefined} */ (handle)),
    now: () => Date.now(),
    random: () => Math.random(),
    importModule: (url) => import(url),
  };
}

/**
 * The page's config from `<meta name="athena-config">`, or null (none, or bad: logged).
 * @param {Pick<Document, "querySelector">} document @returns {AthenaConfig|null}
 */
function readConfig(document) {
  const meta = document.querySelector(CONFIG_META_SELECTOR);
  if (!meta) return null;
  try {
    const raw = JSON.parse(meta.getAttribute("content") || "");
    for (const key of ["page", "token", "events", "calls", "close"]) {
      if (typeof raw[key] !== "string") throw new TypeError(`missing "${key}"`);
    }
    const shared = raw.shared;
    return {
      ...raw,
      heartbeatMs: raw.heartbeatMs > 0 ? raw.heartbeatMs : DEFAULT_HEARTBEAT_MS,
      callTimeoutMs: raw.callTimeoutMs > 0 ? raw.callTimeoutMs : DEFAULT_CALL_TIMEOUT_MS,
      ackEvery: raw.ackEvery > 0 ? raw.ackEvery : ACK_EVERY_MESSAGES,
      debug: Boolean(raw.debug),
      shared: typeof shared?.events === "string" && typeof shared?.key === "string"
        ? { events: shared.events, key: shared.key } : null,
    };
  } catch (error) {
    console.error("athena: bad athena-config meta tag:", error);
    return null;
  }
}

/**
 * The hub through which this tab shares one event stream with the other tabs
 * of its session (athena-shared.js), or null: the server switched it off
 * (`ATHENA_SHARED_STREAM = False`), or the browser lacks Web Locks or
 * BroadcastChannel — then the tab keeps a stream of its own, as before.
 * @param {RuntimeEnv} env @param {AthenaConfig} config @returns {StreamHub|null}
 */
function sharedHub(env, config) {
  const locks = typeof navigator === "undefined" ? undefined : navigator.locks;
  if (!config.shared || !locks || typeof BroadcastChannel !== "function") return null;
  const name = `athena:${config.shared.key}`;
  return new StreamHub({
    EventSource: env.EventSource, BroadcastChannel, locks, setTimeout: env.setTimeout,
    clearTimeout: env.clearTimeout, random: env.random, now: env.now, baseURI: env.document.baseURI,
  }, { channel: name, lock: name, events: config.shared.events, heartbeatMs: config.heartbeatMs });
}

/** Builds this document's Runtime (before any await: widget constructors may callRemote) and starts it. */
function boot() {
  const env = browserEnv();
  const config = readConfig(env.document);
  const hub = config && sharedHub(env, config);
  if (config && hub) env.EventSource = sharedSourceClass(hub, config.page);
  sharing = hub;
  const rt = new Runtime(env, config);
  current = rt;
  rt.start().catch((error) => rt.reportError(error));
  if (!hub) return;
  // After the Runtime's own listeners (its close beacon goes first). A tab
  // leaving, entering the back/forward cache or being frozen gives up its
  // part; the next leader takes over at once.
  hub.start();
  window.addEventListener("pagehide", () => hub.stop());
  window.addEventListener("pageshow", (event) => { if (event.persisted) hub.start(); });
  document.addEventListener("freeze", () => hub.stop());
  document.addEventListener("resume", () => hub.start());
}

// ---- Public namespace -------------------------------------------------------

/**
 * The page-level runtime.
 * @namespace
 */
const Athena = Object.freeze({
  /**
   * Registers a page-level function for the server's `page.call_remote(name, *args)`.
   * @param {string} name
   * @param {Function} fn may return a Promise; its value answers the server
   */
  registerGlobal(name, fn) {
    if (typeof name !== "string" || !name) throw new TypeError("registerGlobal: name must be a non-empty string");
    if (typeof fn !== "function") throw new TypeError(`registerGlobal("${name}"): fn must be a function`);
    runtime().globalFunctions.set(name, fn);
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
  callSignal() { return current?.currentCallSignal; },

  /**
   * A frozen snapshot of the runtime, for tests and debugging.
   * @returns {{id: string|null, status: Status, lastEventId: number, nextSeq: number,
   *   queued: number, widgets: Map<number, Widget>}}
   */
  get page() {
    const rt = current;
    return Object.freeze({
      id: rt?.config?.page ?? null, status: rt?.status ?? "idle", lastEventId: rt?.lastEventId ?? 0,
      nextSeq: rt?.nextSeq ?? 1, queued: rt?.callQueue.length ?? 0, widgets: new Map(rt?.widgetsById),
    });
  },

  /**
   * Connection state as in `<html data-athena-status>`, or "idle" with no page.
   * @returns {Status}
   */
  get connection() { return current?.status ?? "idle"; },

  /** Every live widget of the page, in construction order. @returns {Widget[]} */
  widgets() { return current ? [...current.widgetsById.values()] : []; },

  /**
   * How this tab gets its events: null with a stream of its own, else
   * whether it is the leader (holds the stream shared by the session's tabs)
   * and, if so, the pages the stream carries. For tests and debugging.
   * @returns {{leader: boolean, pages: string[]}|null}
   */
  get sharedStream() {
    return sharing && { leader: sharing.leading, pages: sharing.leading ? [...sharing.pages.keys()] : [] };
  },
});

if (typeof document !== "undefined") boot();
