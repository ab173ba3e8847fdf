// The relay page: numbered messages in both directions (fault-injection test).
import { Widget } from "athena";

export class Sink extends Widget {
  constructor(node) {
    super(node);
    /** Every n the server passed to take(), in the order the calls arrived. */
    this.taken = [];
    /** Results of send(): n → what the server answered (or the error). */
    this.answers = new Map();
  }

  /** Called by the server. */
  take(n) {
    this.taken.push(n);
    this.node.querySelector(".taken").textContent = String(this.taken.length);
    const item = document.createElement("li");
    item.textContent = `server → browser #${n}`;
    this.node.querySelector(".log").append(item);
  }

  /** Sends record(n) for each n, without waiting between them. */
  send(numbers) {
    for (const n of numbers) {
      this.callRemote("record", n).then(
        (answer) => { this.answers.set(n, answer); this.showSent(); },
        (error) => { this.answers.set(n, `${error.name}: ${error.message}`); this.showSent(); },
      );
    }
  }

  showSent() {
    this.node.querySelector(".sent").textContent = String(this.answers.size);
  }
}
