// Loaded on demand: no widget of the initial /core page uses this module.
import { Child } from "Core";

export const loadedAt = performance.now();

export class Thing extends Child {
  hello() { return `hello from ${this.name}`; }
}
