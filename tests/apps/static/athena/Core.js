// Widgets of the browser tests' /core page (tests/apps/browser_app.py).
import { Athena, Widget } from "athena";

/** Lifecycle events seen in the browser, in order; the tests read it. */
export const lifecycle = [];

Athena.registerGlobal("documentTitle", () => document.title);
Athena.registerGlobal("sum", (...numbers) => numbers.reduce((a, b) => a + b, 0));
Athena.registerGlobal("upperLater", (text) => new Promise((resolve) => {
  setTimeout(() => resolve(text.toUpperCase()), 30);
}));
Athena.registerGlobal("refuse", (why) => { throw new SyntaxError(why); });

export class Child extends Widget {
  constructor(node, name) {
    super(node);
    this.name = name;
  }

  loaded() { lifecycle.push(`loaded:${this.name}`); }

  detached() { lifecycle.push(`detached:${this.name}`); }
}

export class Leaf extends Child {}

export class Probe extends Child {
  constructor(node, name) {
    super(node, name);
    this.clicks = node.querySelector(".clicks");
  }

  /** Bound by data-athena-on="click:clicked". */
  async clicked() {
    this.clicks.textContent = String(await this.callRemote("clicked"));
  }

  // Called by the server (through Probe.ask):
  double(x) { return x * 2; }

  later(value, ms) {
    return new Promise((resolve) => setTimeout(() => resolve({ later: value }), ms));
  }

  explode(message) { throw new RangeError(message); }

  /** Waits until the server cancels this call (Probe.ask_and_cancel); records how. */
  waitForCancel() {
    const signal = Athena.callSignal(); // synchronously, before any await
    return new Promise((resolve) => {
      signal.addEventListener("abort", () => {
        window.cancelSeen = { name: signal.reason.name, message: signal.reason.message };
        resolve("an answer nobody waits for");
      });
    });
  }

  rejectLater(message) {
    return new Promise((_, reject) => setTimeout(() => reject(new TypeError(message)), 20));
  }

  /** Called by the server with a widget it built (Probe.push_gadget). */
  adopt(widget) {
    this.node.querySelector(".dynamic").append(widget.node);
    return {
      isWidget: widget instanceof Widget,
      cls: widget.constructor.name,
      id: widget.widgetId,
      parent: widget.widgetParent ? widget.widgetParent.widgetId : null,
      inDocument: document.contains(widget.node),
    };
  }
}
