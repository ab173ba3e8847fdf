// Fakes of the browser parts athena.js's Runtime takes (its RuntimeEnv): a
// clock whose time moves only when a test says so, a fetch whose replies the
// test writes, an EventSource the test drives, and the little of document,
// window, navigator, location and sessionStorage the runtime touches.
// No DOM library: the runtime's lanes, stream and status need none of it.

import { Runtime } from "../../flask_athena/static/athena.js";

/** Lets every pending promise callback and I/O callback run. */
export async function settle(rounds = 3) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Timers that fire only inside advance(); time starts at a fixed epoch. */
export class FakeClock {
  constructor(startMs = 1_700_000_000_000) {
    this.nowMs = startMs;
    this.nextId = 1;
    /** @type {Map<number, {at: number, ms: number, callback: () => void}>} */
    this.timers = new Map();
    this.setTimeout = (callback, ms) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.nowMs + Math.max(0, Number(ms) || 0), ms, callback });
      return id;
    };
    this.clearTimeout = (id) => { this.timers.delete(id); };
    this.now = () => this.nowMs;
  }

  /** The delays (ms) of the timers still pending, in the order they were set. */
  pendingDelays() {
    return [...this.timers.values()].map((t) => t.ms);
  }

  /** Moves time forward by `ms`, firing due timers in order, settling promises between them. */
  async advance(ms) {
    const end = this.nowMs + ms;
    for (;;) {
      await settle();
      let next;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (!next || timer.at < next[1].at)) next = [id, timer];
      }
      if (!next) break;
      this.timers.delete(next[0]);
      this.nowMs = next[1].at;
      next[1].callback();
    }
    this.nowMs = end;
    await settle();
  }
}

/** A fetch whose requests wait until the test answers them. */
export function fakeFetch() {
  /** @type {any[]} */
  const requests = [];
  const fetch = (url, init = {}) => new Promise((resolve, reject) => {
    const request = {
      url, init, body: init.body === undefined ? undefined : JSON.parse(init.body),
      answered: false,
      /** Answers with `status` and a JSON body (undefined: a body that is not JSON). */
      respond(status, body) {
        request.answered = true;
        resolve({ status, json: async () => { if (body === undefined) throw new SyntaxError("not JSON"); return body; } });
      },
      /** The network failed. */
      fail() { request.answered = true; reject(new TypeError("Failed to fetch")); },
    };
    init.signal?.addEventListener("abort", () => {
      request.aborted = true;
      reject(new DOMException("The operation was aborted.", "AbortError"));
    });
    requests.push(request);
  });
  fetch.requests = requests;
  /** Requests to the calls endpoint not answered yet. */
  fetch.open = () => requests.filter((r) => !r.answered && !r.aborted);
  return fetch;
}

/** An EventSource the test drives: open(), message(), heartbeat(), gone(), error(). */
export function fakeEventSourceClass() {
  class FakeEventSource {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 2;
    static instances = /** @type {FakeEventSource[]} */ ([]);

    constructor(url) {
      this.url = new URL(url);
      this.readyState = FakeEventSource.CONNECTING;
      this.closed = false;
      /** @type {Map<string, Function[]>} */
      this.listeners = new Map();
      FakeEventSource.instances.push(this);
    }

    addEventListener(type, listener) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(listener);
    }

    close() { this.readyState = FakeEventSource.CLOSED; this.closed = true; }

    emit(type, event = {}) {
      for (const listener of this.listeners.get(type) ?? []) listener({ type, ...event });
    }

    open() { this.readyState = FakeEventSource.OPEN; this.emit("open"); }

    /** A message with SSE id `id` and JSON `data`. */
    message(id, data) { this.emit("message", { lastEventId: String(id), data: JSON.stringify(data) }); }

    heartbeat() { this.emit("heartbeat", { data: "" }); }

    gone(reason) { this.emit("gone", { data: JSON.stringify({ reason }) }); }

    /** A failed connection; `final`: the browser gives up (non-200), else it retries by itself. */
    error(final) {
      this.readyState = final ? FakeEventSource.CLOSED : FakeEventSource.CONNECTING;
      this.emit("error");
    }
  }
  return FakeEventSource;
}

/** sessionStorage's getItem / setItem over a Map. */
export function fakeStorage() {
  const items = new Map();
  return {
    items,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem: (key, value) => { items.set(key, String(value)); },
  };
}

/** An EventTarget with the attributes of `document` the runtime reads. */
export function fakeDocument() {
  const document = new EventTarget();
  const attributes = new Map();
  Object.assign(document, {
    baseURI: "http://127.0.0.1:5000/chat",
    readyState: "complete",
    body: null, // no banner: its text is the browser tests' business
    documentElement: { setAttribute: (name, value) => attributes.set(name, value), attributes },
    querySelector: () => null,
    querySelectorAll: () => [],
  });
  /** @type {CustomEvent[]} */
  document.events = [];
  const dispatch = document.dispatchEvent.bind(document);
  document.dispatchEvent = (event) => { document.events.push(event); return dispatch(event); };
  return document;
}

/** A page's config, as the athena-config meta tag gives it. */
export function pageConfig(overrides = {}) {
  return {
    page: "p1", token: "t1", events: "/_athena/p1/events", calls: "/_athena/p1/calls",
    close: "/_athena/p1/close", heartbeatMs: 15000, callTimeoutMs: 30000, ackEvery: 256, debug: false,
    ...overrides,
  };
}

/**
 * A RuntimeEnv of fakes plus handles on them; `random` is 0.5 by default,
 * which makes every jitter zero (delays are exact).
 */
export function fakeEnv(options = {}) {
  const clock = new FakeClock();
  const windowListeners = new Map();
  const env = {
    fetch: fakeFetch(),
    EventSource: fakeEventSourceClass(),
    document: fakeDocument(),
    window: {
      addEventListener: (type, listener) => {
        if (!windowListeners.has(type)) windowListeners.set(type, []);
        windowListeners.get(type).push(listener);
      },
    },
    beacons: [],
    navigator: {
      sendBeacon: (url, data) => { env.beacons.push({ url, data }); return true; },
    },
    location: { reloads: 0, reload() { this.reloads += 1; } },
    sessionStorage: fakeStorage(),
    storage: () => env.sessionStorage,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: options.random ?? (() => 0.5),
    importModule: async (url) => { throw new Error(`no modules in Node (${url})`); },
    clock,
    /** Errors thrown by window listeners (a browser reports them and goes on). */
    listenerErrors: [],
    /** Fires a window event at the runtime's listeners; one that throws does not stop the next. */
    fire(type, event = {}) {
      for (const listener of windowListeners.get(type) ?? []) {
        try {
          listener({ type, ...event });
        } catch (error) {
          env.listenerErrors.push(error);
        }
      }
    },
    /** The event stream the runtime opened last. */
    get stream() { return env.EventSource.instances.at(-1); },
    /** The athena:* events dispatched on the document, by type. */
    events(type) { return env.document.events.filter((e) => e.type === type); },
  };
  return env;
}

/** A started Runtime over fakes, its stream open (unless `connect` is false). */
export async function startedRuntime(options = {}) {
  const env = fakeEnv(options);
  const rt = new Runtime(env, pageConfig(options.config));
  const errors = [];
  env.document.addEventListener("athena:error", (event) => { errors.push(event.detail.error); event.preventDefault(); });
  await rt.start();
  if (options.connect !== false) env.stream.open();
  await settle();
  return { env, rt, errors, clock: env.clock, fetch: env.fetch };
}

/** Answers a calls-lane request with an ok result for each of its messages. */
export function answerAll(request, value = (m) => m.method) {
  request.respond(200, { results: request.body.messages.map((m) => ({ seq: m.seq, ok: value(m) })) });
}

/** Answers control POSTs (200) until none is open; returns every message they carried. */
export async function drainControl(fetch) {
  await settle();
  while (fetch.open().length) {
    for (const request of fetch.open()) request.respond(200, { results: [] });
    await settle();
  }
  return fetch.requests.flatMap((r) => r.body.messages);
}
