// The inspector's widget: renders every worker's view; the server calls update().
// Everything shown is set with textContent (a topic or class name is data, never markup).
'use strict';
import { Widget } from "athena";

/**
 * @typedef {{id: number, class: string, js_class: string, topics: string[], children: ElementInfo[]}} ElementInfo
 * @typedef {{ref: string, connected: boolean, idle: number|null, elements: number, tree: ElementInfo[],
 *            pending_calls: number, outbox_depth: number|null, last_seq: number}} PageInfo
 * @typedef {{worker: string, host: string, pid: number, broker: string, page_count: number,
 *            pages: PageInfo[], streams: number, topic_count: number,
 *            topics: {topic: string, members: number, presence: number|null}[],
 *            errors: {time: number, kind: string, code: string, detail: string}[],
 *            broker_loops: {name: string, alive: boolean, restarts: number, failed_items: number}[]}} WorkerInfo
 */

/** Create an element with text. */
function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/** A table with a header row and one row per item. */
function table(headers, rows) {
  const t = el("table");
  const head = t.createTHead().insertRow();
  headers.forEach((h, i) => {
    // Numbers are right-aligned: so is their header.
    const numeric = rows.length > 0 && typeof rows[0][i] === "number";
    head.appendChild(el("th", h, numeric ? "num" : undefined));
  });
  const body = t.createTBody();
  for (const cells of rows) {
    const row = body.insertRow();
    for (const cell of cells) {
      const td = row.insertCell();
      if (cell instanceof Node) td.appendChild(cell);
      else {
        td.textContent = cell === null || cell === undefined ? "–" : String(cell);
        if (typeof cell === "number") td.className = "num";
      }
    }
  }
  return t;
}

/** @param {ElementInfo[]} nodes */
function tree(nodes) {
  const list = el("ul", null, "tree");
  for (const node of nodes) {
    const item = el("li");
    item.appendChild(el("code", `${node.class}`));
    if (node.topics.length) item.appendChild(el("span", ` · ${node.topics.join(", ")}`, "topics"));
    if (node.children.length) item.appendChild(tree(node.children));
    list.appendChild(item);
  }
  return list;
}

export class Inspector extends Widget {
  /** @param {HTMLElement} node @param {WorkerInfo[]} workers */
  constructor(node, workers) {
    super(node);
    this.summary = node.querySelector(".summary");
    this.workersNode = node.querySelector(".workers");
    this.updates = 0;
    this.update(workers);
  }

  /** Called by the server with every worker's view. @param {WorkerInfo[]} workers */
  update(workers) {
    this.updates += 1;
    this.node.dataset.updates = String(this.updates);
    const pages = workers.reduce((n, w) => n + w.page_count, 0);
    const streams = workers.reduce((n, w) => n + w.streams, 0);
    const errors = workers.reduce((n, w) => n + w.errors.length, 0);
    this.node.dataset.pages = String(pages);
    this.node.dataset.workers = String(workers.length);
    this.summary.replaceChildren(
      ...[[workers.length, "workers"], [pages, "live pages"], [streams, "event streams"],
        [errors, "recent errors"]].map(([n, label]) => {
        const box = el("div");
        box.appendChild(el("strong", n));
        box.appendChild(el("span", label));
        return box;
      }));
    this.workersNode.replaceChildren(...workers.map((w) => this.renderWorker(w)));
  }

  /** @param {WorkerInfo} w */
  renderWorker(w) {
    const section = el("section", null, "worker");
    section.dataset.worker = w.worker;
    section.appendChild(el("h2", `worker ${w.worker.slice(0, 8)} · ${w.host} · pid ${w.pid}`));
    section.appendChild(el("div",
      `${w.broker} broker · ${w.page_count} pages · ${w.streams} streams · ${w.topic_count} topics`,
      "meta"));
    if (w.broker_loops && w.broker_loops.length) {
      section.appendChild(el("div", "broker loops: " + w.broker_loops.map((l) =>
        `${l.name} ${l.alive ? "alive" : "DOWN"}` +
        (l.restarts ? ` (${l.restarts} restarts)` : "") +
        (l.failed_items ? ` (${l.failed_items} dropped)` : "")).join(" · "), "meta"));
    }
    section.appendChild(el("h3", "Pages"));
    if (w.pages.length) {
      section.appendChild(table(
        ["page", "status", "elements", "pending calls", "outbox", "sent"],
        w.pages.map((p) => {
          const status = el("span", p.connected ? "connected" : `idle ${p.idle}s`,
            p.connected ? "status-connected" : "status-idle");
          const ref = el("code", p.ref);
          ref.dataset.page = p.ref;
          return [ref, status, tree(p.tree), p.pending_calls, p.outbox_depth, p.last_seq];
        })));
      if (w.page_count > w.pages.length) {
        section.appendChild(el("p", `… and ${w.page_count - w.pages.length} more`, "hint"));
      }
    } else {
      section.appendChild(el("p", "no live pages", "empty"));
    }
    if (w.topics.length) {
      section.appendChild(el("h3", "Topics"));
      section.appendChild(table(["topic", "members here", "presence"],
        w.topics.map((t) => [el("code", t.topic), t.members, t.presence])));
    }
    section.appendChild(el("h3", "Recent errors"));
    if (w.errors.length) {
      const list = el("ul", null, "errors");
      for (const e of w.errors.slice(-10).reverse()) {
        const when = new Date(e.time * 1000).toLocaleTimeString();
        list.appendChild(el("li", `${when} ${e.kind} ${e.code}: ${e.detail}`));
      }
      section.appendChild(list);
    } else {
      section.appendChild(el("p", "none", "empty"));
    }
    return section;
  }
}
