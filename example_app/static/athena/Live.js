// Widgets the server drives on its own: a clock and a job's progress bar.
import { Widget } from "athena";

export class Clock extends Widget {
  constructor(node, now) {
    super(node);
    this.face = node.querySelector(".time");
    this.face.textContent = now;
    this.ticks = 0;
  }

  /** Called by the server every second. */
  tick(now) {
    this.ticks += 1;
    this.face.textContent = now;
    this.node.dataset.ticks = String(this.ticks);
  }
}

export class ProgressJob extends Widget {
  constructor(node) {
    super(node);
    this.bar = node.querySelector(".bar");
    this.status = node.querySelector(".status");
    this.button = node.querySelector("button");
  }

  async start() {
    this.button.disabled = true;
    this.status.textContent = "Starting…";
    this.node.dataset.state = "running";
    const started = await this.callRemote("start", 30);
    if (!started) this.status.textContent = "Already running.";
  }

  /** Called by the server after each step. */
  progress(done, total) {
    this.bar.max = total;
    this.bar.value = done;
    this.status.textContent = `Step ${done} of ${total}`;
  }

  /** Called by the server when the job ends. */
  finished(summary) {
    this.status.textContent = `Finished: ${summary}`;
    this.node.dataset.state = "finished";
    this.button.disabled = false;
    this.button.textContent = "Run again";
  }
}
