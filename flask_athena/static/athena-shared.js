'use strict';
/**
 * One event stream per browser, shared by its tabs (DESIGN §9; README "Every
 * tab works"). Browsers give an HTTP/1.1 origin six connections; with one
 * event stream per tab the seventh tab never loads.
 *
 * **Election.** Every tab of one session on one origin asks for the same Web
 * Lock (`navigator.locks`). The tab holding it is the *leader*: it holds ONE
 * EventSource, `GET <prefix>/events?pages=<id>:<last>,...`, for the pages of
 * every tab, and relays each page's messages to its tab over a
 * BroadcastChannel. The browser releases the lock when the leader's tab
 * closes or crashes; a tab going into the back/forward cache or being frozen
 * gives it up. The next tab in the lock's queue becomes leader, announces
 * itself, every tab attaches again with the id of the last message it
 * received, and the new leader's stream replays from there: nothing is lost,
 * and a repeat is dropped by the tab's Runtime (ids are per page).
 *
 * **A leader that falls silent.** A tab can stop running without a word
 * (frozen where the engine fires no `freeze` event, its JS stuck or paused):
 * it keeps the lock and relays nothing. The leader relays a heartbeat (or,
 * when its stream is down, a `down` at each retry), so a tab that hears
 * nothing from it for 2.5 heartbeats plus some slack takes the lock over
 * (`steal`). Every leader message carries the leader's *term* (the clock when
 * it took the lead, above every term it had seen): tabs ignore messages of
 * an older term, so a deposed leader that wakes up relays nothing anyone
 * applies, learns from the newer term (or its lock's rejection) that it was
 * replaced, and rejoins as a follower.
 *
 * **Per page, as before.** Each tab keeps its own page: id, token, sequence
 * numbers, POSTs and acks go from the tab itself, exactly as with a stream of
 * its own. Only the stream is shared: the Runtime gets a {@link SharedSource}
 * where it would construct an EventSource, and sees the same events (open,
 * message with its page's ids, heartbeat, gone, error).
 *
 * **Wire.** The shared stream's messages are the pages' own SSE messages (the
 * page's seq as `id:`) with one more first data line: the page id. So
 * `event.data` is `<page>\n<message JSON>`. `event: gone` carries
 * `{"page", "reason"}` for one page; heartbeats are shared.
 *
 * **Channel.** Tabs say `attach {page, last}` and `detach {page}`; the leader
 * says `leader`, `open {pages}`, `msg {page, id, data}`, `hb`,
 * `gone {page, reason}`, `down` (its stream failed; it reconnects with
 * backoff, the tabs wait) and `alive` (an attach heard; the stream comes);
 * each with its `term`.
 *
 * Browsers without Web Locks or BroadcastChannel (or `ATHENA_SHARED_STREAM =
 * False`) keep one EventSource per tab.
 *
 * @module athena-shared
 */

// ---- Public surface ----------------------------------------------------------
export { StreamHub, SharedSource, sharedSourceClass };

// ---- Constants -------------------------------------------------------------

const REOPEN_DELAY_MS = 30;              // tabs attaching together join one reopen of the stream
const ATTACH_RETRY_STEPS_MS = [500, 1000, 2000, 5000];  // an attach nobody answered (no leader yet)
const HEARTBEAT_TOLERANCE = 2.5;         // heartbeats of silence = dead stream (as athena.js)
const RETRY_STEPS_MS = [250, 500, 1000, 2000, 5000];    // the leader's reconnects; the last is the cap
const RETRY_JITTER = 0.3;
const TAKEOVER_SLACK_MS = 10000;         // beyond 2.5 heartbeats: covers a reconnecting leader's backoff (cap 5 s + jitter)
const TAKEOVER_JITTER = 0.3;             // followers of a silent leader do not all steal at once
/** Leader messages: each carries the leader's term. */
const LEADER_MESSAGES = new Set(["leader", "open", "msg", "hb", "gone", "down", "alive"]);

// ---- Types -----------------------------------------------------------------

/**
 * What the hub takes from its world; a browser gives its own, tests fakes.
 * @typedef {object} HubEnv
 * @property {{new (url: string): EventSource, readonly CLOSED: number}} EventSource
 * @property {{new (name: string): ChannelLike}} BroadcastChannel
 * @property {LocksLike} locks navigator.locks
 * @property {(callback: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 * @property {() => number} random uniform in [0, 1)
 * @property {() => number} now milliseconds since the epoch (a leader's term)
 * @property {string} baseURI
 */
/**
 * What the hub needs of a BroadcastChannel.
 * @typedef {{postMessage: (message: any) => void, close: () => void,
 *   onmessage: ((event: MessageEvent) => any)|null}} ChannelLike
 */
/**
 * @typedef {{request: (name: string, options: {signal?: AbortSignal, steal?: boolean},
 *   callback: () => Promise<void>) => Promise<void>}} LocksLike
 */
/**
 * A message on the hub's BroadcastChannel; a leader's carry its `term`.
 * @typedef {({t: "attach", page: string, last: number}|{t: "detach", page: string}|{t: "leader"}
 *   |{t: "open", pages: string[]}|{t: "msg", page: string, id: string, data: string}|{t: "hb"}
 *   |{t: "gone", page: string, reason: string}|{t: "down"}|{t: "alive"}) & {term?: number}} HubMessage
 */
/**
 * Options of a hub: its names (scoped to the session) and the shared endpoint.
 * @typedef {{channel: string, lock: string, events: string, heartbeatMs: number}} HubOptions
 */

/** @param {number} tries from 1 @param {readonly number[]} steps @param {() => number} random */
function backoff(tries, steps, random) {
  const base = steps[Math.min(Math.max(tries, 1), steps.length) - 1];
  return Math.round(base * (1 + RETRY_JITTER * (2 * random() - 1)));
}

// ---- The tab's side: an EventSource look-alike ------------------------------

/**
 * What a tab's Runtime uses instead of an EventSource: the events of its
 * page, relayed from the leader's stream. `reconnects` tells the Runtime that
 * a failure is the leader's to repair (it reconnects for every tab): the
 * Runtime waits instead of closing and reopening.
 */
class SharedSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  /** @param {StreamHub} hub @param {string} page @param {number} last id of the last message the page has */
  constructor(hub, page, last) {
    this.hub = hub;
    this.page = page;
    /** The last id delivered (the page's Last-Event-ID if it reattaches). */
    this.last = last;
    this.readyState = SharedSource.CONNECTING;
    /** @type {Map<string, ((event: any) => void)[]>} */
    this.listeners = new Map();
  }

  /** @param {string} type @param {(event: any) => void} listener */
  addEventListener(type, listener) {
    const list = this.listeners.get(type) ?? [];
    list.push(listener);
    this.listeners.set(type, list);
  }

  /** Stops the relay to this source; the leader drops the page from its stream. */
  close() {
    if (this.readyState === SharedSource.CLOSED) return;
    this.readyState = SharedSource.CLOSED;
    this.hub.detach(this);
  }

  /** @param {string} type @param {object} [fields] */
  emit(type, fields = {}) {
    if (this.readyState === SharedSource.CLOSED) return;
    for (const listener of this.listeners.get(type) ?? []) listener({ type, ...fields });
  }
}

/**
 * The EventSource class a Runtime gets in place of the browser's: each new
 * source attaches its page (the `last` query parameter of the URL the
 * Runtime builds) to the hub.
 * @param {StreamHub} hub @param {string} page
 * @returns {{new (url: string): EventSource, readonly CLOSED: number, readonly reconnects: boolean}}
 */
function sharedSourceClass(hub, page) {
  class HubSource extends SharedSource {
    static reconnects = true;
    /** @param {string} url */
    constructor(url) {
      const last = Number(new URL(url).searchParams.get("last") ?? "0");
      super(hub, page, Number.isSafeInteger(last) && last >= 0 ? last : 0);
      hub.attach(this);
    }
  }
  return /** @type {any} */ (HubSource);
}

// ---- The hub: one per tab, leader or not -------------------------------------

/**
 * One per tab. Every tab relays its own page's events to its source; the
 * leader also holds the shared EventSource and relays to the others.
 */
class StreamHub {
  /** @param {HubEnv} env @param {HubOptions} options */
  constructor(env, options) {
    this.env = env;
    this.options = options;
    /** @type {SharedSource|null} this tab's source */
    this.source = null;
    this.channel = /** @type {ChannelLike|null} */ (null);
    this.leading = false;
    this.stopped = true;
    /** @type {(() => void)|null} resolves the lock's callback: gives up the lock */
    this.releaseLock = null;
    /** @type {AbortController|null} cancels a lock request still waiting */
    this.lockWait = null;
    this.attachTries = 0;
    this.attachTimer = /** @type {unknown} */ (undefined);
    /** The newest leader's term heard (or this tab's own while it leads). */
    this.term = 0;
    /** No word from the leader for this long: take the lock over. */
    this.takeoverMs = options.heartbeatMs * HEARTBEAT_TOLERANCE + TAKEOVER_SLACK_MS;
    this.takeoverTimer = /** @type {unknown} */ (undefined);

    // Leader only: the pages of the stream, by id → the last id relayed.
    /** @type {Map<string, number>} */
    this.pages = new Map();
    /** @type {EventSource|null} */
    this.stream = null;
    this.streamOpen = false;
    /** Pages the open stream carries (attached before it opened). */
    this.streamPages = /** @type {Set<string>} */ (new Set());
    this.reopenTimer = /** @type {unknown} */ (undefined);
    this.retryTimer = /** @type {unknown} */ (undefined);
    this.retryTries = 0;
    this.watchdog = /** @type {unknown} */ (undefined);
  }

  /** Joins the channel and the election. Idempotent. */
  start() {
    if (!this.stopped) return;
    this.stopped = false;
    const channel = new this.env.BroadcastChannel(this.options.channel);
    channel.onmessage = (event) => this.onChannel(/** @type {HubMessage} */ (event.data));
    this.channel = channel;
    this.term = 0; // back from a freeze: whoever leads now is news
    this.requestLock(false);
    this.watchLeader();
    if (this.source) {
      // Back from the cache or a freeze: messages may have been missed, so
      // ask again from the last id this tab has (see onTabMessage).
      this.post({ t: "detach", page: this.source.page });
      this.sendAttach();
    }
  }

  /**
   * Queues for the lock (or, `steal`, takes it from a silent holder); the
   * grant makes this tab the leader until it resigns or is deposed.
   * @param {boolean} steal
   */
  requestLock(steal) {
    this.lockWait?.abort();
    const wait = new AbortController();
    this.lockWait = wait;
    let granted = false;
    const options = steal ? { steal: true } : { signal: wait.signal };
    this.env.locks.request(this.options.lock, options, () => new Promise((release) => {
      granted = true;
      if (this.lockWait === wait) this.lockWait = null;
      // Stopped (or re-requested) while the grant was on its way.
      if (this.stopped || wait.signal.aborted) return release();
      this.releaseLock = () => release();
      this.lead();
    })).catch(() => {
      // Aborted while waiting (stop(), a steal of our own), or stolen from
      // us while we led: another tab took over.
      if (granted && this.leading && this.lockWait === null) this.deposed();
    });
  }

  /**
   * Leaves the election and the channel (pagehide, freeze); a leader closes
   * its stream and gives up the lock, so another tab takes over at once.
   */
  stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.lockWait?.abort();
    this.lockWait = null;
    if (this.leading) this.resign();
    this.env.clearTimeout(this.takeoverTimer);
    this.env.clearTimeout(this.attachTimer);
    this.channel?.close();
    this.channel = null;
  }

  // ---- Tab side ----------------------------------------------------------------

  /** A source of this tab opened: ask the leader for its page. @param {SharedSource} source */
  attach(source) {
    if (this.source && this.source !== source) this.source.close();
    this.source = source;
    this.attachTries = 0;
    this.sendAttach();
  }

  /** @param {SharedSource} source */
  detach(source) {
    if (this.source !== source) return;
    this.source = null;
    this.env.clearTimeout(this.attachTimer);
    this.post({ t: "detach", page: source.page });
  }

  /** Asks for the page; again, with backoff, until the leader's stream carries it. */
  sendAttach() {
    const source = this.source;
    this.env.clearTimeout(this.attachTimer);
    if (!source || this.stopped) return;
    this.post({ t: "attach", page: source.page, last: source.last });
    this.attachTries += 1;
    this.attachTimer = this.env.setTimeout(() => {
      if (this.source === source && source.readyState !== SharedSource.OPEN) this.sendAttach();
    }, backoff(this.attachTries, ATTACH_RETRY_STEPS_MS, this.env.random));
  }

  /** To every tab: over the channel, and to this tab's own source (a channel does not echo). @param {HubMessage} message */
  post(message) {
    if (this.stopped) return;
    if (LEADER_MESSAGES.has(message.t)) message = { ...message, term: this.term };
    this.channel?.postMessage(message);
    this.onChannel(message, true);
  }

  /** (Re)arms the follower's watch on the leader: silence past takeoverMs, and it takes over. */
  watchLeader() {
    this.env.clearTimeout(this.takeoverTimer);
    if (this.stopped || this.leading) return;
    const ms = this.takeoverMs * (1 + TAKEOVER_JITTER * this.env.random());
    this.takeoverTimer = this.env.setTimeout(() => {
      if (this.stopped || this.leading) return;
      if (!this.source) return this.watchLeader(); // nothing to receive: nothing to repair
      this.requestLock(true); // the holder is silent: steal the lock
    }, ms);
  }

  /**
   * A message from the channel (or this tab's own).
   * @param {HubMessage} message @param {boolean} [own]
   */
  onChannel(message, own = false) {
    if (!own && LEADER_MESSAGES.has(message.t)) {
      const term = Number(message.term) || 0;
      if (term < this.term) return; // a deposed leader's late word: nobody applies it
      if (this.leading && term > this.term) this.deposed(); // a newer leader took the lock over
      this.term = term;
      this.watchLeader();
    }
    if (this.leading) this.onTabMessage(message);
    if (own && (message.t === "attach" || message.t === "detach")) return;
    const source = this.source;
    switch (message.t) {
      case "leader":
        if (!own && source) { this.attachTries = 0; this.sendAttach(); }
        return;
      case "open":
        if (source && message.pages.includes(source.page) && source.readyState !== SharedSource.OPEN) {
          source.readyState = SharedSource.OPEN;
          this.env.clearTimeout(this.attachTimer);
          source.emit("open");
        }
        return;
      case "msg":
        if (source?.page !== message.page) return;
        if (Number(message.id) > source.last) source.last = Number(message.id);
        source.emit("message", { lastEventId: message.id, data: message.data });
        return;
      case "hb":
        if (source?.readyState === SharedSource.OPEN) source.emit("heartbeat", { data: "{}" });
        return;
      case "gone":
        if (source?.page === message.page) source.emit("gone", { data: JSON.stringify({ reason: message.reason }) });
        return;
      case "down":
        if (source && source.readyState === SharedSource.OPEN) {
          source.readyState = SharedSource.CONNECTING;
          source.emit("error");
          this.attachTries = 0;
          this.sendAttach(); // in case the leader itself went away
        }
        return;
      default:
    }
  }

  // ---- Leader side -----------------------------------------------------------

  /** This tab got the lock. Every tab attaches again, with what it has. */
  lead() {
    this.leading = true;
    this.env.clearTimeout(this.takeoverTimer);
    // Above every term heard, and later than any earlier leader's (a clock).
    this.term = Math.max(this.term + 1, this.env.now());
    this.pages.clear();
    this.post({ t: "leader" });
    if (this.source) this.onTabMessage({ t: "attach", page: this.source.page, last: this.source.last });
  }

  /** Closes the stream and gives up the lock (the tabs' sources wait for the next leader). */
  resign() {
    this.channel?.postMessage({ t: "down", term: this.term });
    this.abdicate();
    this.releaseLock?.();
    this.releaseLock = null;
  }

  /** Stops leading (the stream closed, timers cleared); the lock is not touched. */
  abdicate() {
    this.leading = false;
    this.closeStream();
    this.env.clearTimeout(this.reopenTimer);
    this.env.clearTimeout(this.retryTimer);
    this.reopenTimer = undefined;
    this.retryTimer = undefined;
    this.pages.clear();
  }

  /**
   * Another tab took the lock over while this one was silent (frozen, stuck):
   * it leads now. Stop leading without a word (the new leader speaks), queue
   * for the lock again and ask the new leader for this tab's page.
   */
  deposed() {
    this.abdicate();
    this.releaseLock = null; // the lock is the stealer's already
    if (this.stopped) return;
    this.requestLock(false);
    this.watchLeader();
    const source = this.source;
    if (source) {
      if (source.readyState === SharedSource.OPEN) {
        source.readyState = SharedSource.CONNECTING;
        source.emit("error");
      }
      this.post({ t: "detach", page: source.page });
      this.attachTries = 0;
      this.sendAttach();
    }
  }

  /** A tab's attach or detach, as the leader sees it. @param {HubMessage} message */
  onTabMessage(message) {
    if (message.t === "attach") {
      const known = this.pages.get(message.page);
      if (known === undefined) {
        // A new page, or one that detached to ask again from its last id
        // (a resync after a gap, a tab back from the cache): the stream is
        // reopened to replay from there. An attach for a page already on
        // the stream never lowers its id: it may be stale (sent before
        // relays that followed), and the tab may have acknowledged past it.
        this.pages.set(message.page, message.last);
        this.scheduleReopen();
      } else if (this.streamOpen && this.streamPages.has(message.page)) {
        this.post({ t: "open", pages: [message.page] });
      } else {
        this.post({ t: "alive" }); // the stream comes (a reopen or a retry is due)
      }
    } else if (message.t === "detach") {
      // Not reopened for this: the stream stops carrying it at its next reopen.
      this.pages.delete(message.page);
    }
  }

  scheduleReopen() {
    // While the stream is down, the pending retry opens it with every page:
    // a tab attaching then must not make an attempt outside the backoff.
    if (this.reopenTimer !== undefined || this.retryTimer !== undefined) return;
    this.reopenTimer = this.env.setTimeout(() => {
      this.reopenTimer = undefined;
      this.openStream();
    }, REOPEN_DELAY_MS);
  }

  /** Opens the shared stream for every attached page, each from its last id. */
  openStream() {
    this.closeStream();
    if (!this.leading || this.pages.size === 0) return;
    const url = new URL(this.options.events, this.env.baseURI);
    url.searchParams.set("pages", [...this.pages].map(([page, last]) => `${page}:${last}`).join(","));
    const pages = new Set(this.pages.keys());
    const es = new this.env.EventSource(url.href);
    this.stream = es;
    this.armWatchdog();
    /** @param {string} type @param {(event: MessageEvent) => void} handler */
    const on = (type, handler) => es.addEventListener(type, (event) => {
      if (es === this.stream) handler(/** @type {MessageEvent} */ (event)); // ignore a replaced stream
    });
    on("open", () => {
      this.retryTries = 0;
      this.streamOpen = true;
      this.streamPages = pages;
      this.armWatchdog();
      this.post({ t: "open", pages: [...pages] });
    });
    on("message", (event) => {
      this.armWatchdog();
      const data = String(event.data);
      const cut = data.indexOf("\n");
      const page = data.slice(0, cut);
      const known = this.pages.get(page);
      if (cut < 0 || known === undefined) return; // a page detached since the stream opened
      const id = Number(event.lastEventId);
      if (id > known) this.pages.set(page, id);
      this.post({ t: "msg", page, id: event.lastEventId, data: data.slice(cut + 1) });
    });
    on("heartbeat", () => {
      this.armWatchdog();
      this.post({ t: "hb" });
    });
    on("gone", (event) => {
      /** @type {any} */
      let info = {};
      try { info = JSON.parse(event.data); } catch { /* a gone for nobody */ }
      if (typeof info.page !== "string") return;
      this.pages.delete(info.page);
      this.post({ t: "gone", page: info.page, reason: String(info.reason ?? "gone") });
    });
    // One reconnect policy (as athena.js): a failed stream is closed, never
    // left to the browser's own retry, and reopened with backoff from the
    // last ids relayed.
    on("error", () => this.streamFailed());
  }

  streamFailed() {
    this.closeStream();
    this.post({ t: "down" });
    this.env.clearTimeout(this.retryTimer);
    this.retryTries += 1;
    this.retryTimer = this.env.setTimeout(() => {
      this.retryTimer = undefined;
      this.openStream();
    }, backoff(this.retryTries, RETRY_STEPS_MS, this.env.random));
  }

  closeStream() {
    this.env.clearTimeout(this.watchdog);
    this.stream?.close();
    this.stream = null;
    this.streamOpen = false;
    this.streamPages = new Set();
  }

  /** A stream silent for 2.5 heartbeats is dead (a dead connection is otherwise silent). */
  armWatchdog() {
    this.env.clearTimeout(this.watchdog);
    this.watchdog = this.env.setTimeout(() => this.streamFailed(), this.options.heartbeatMs * HEARTBEAT_TOLERANCE);
  }
}
