// The tutorial's chat widget: `say` goes to the server, `hear` comes back.
// "Here now" is a presence list: one snapshot when entering, then diffs.
import { Widget } from "athena";
import { PresenceList } from "athena/presence";

const byName = (a, b) => a.toLowerCase().localeCompare(b.toLowerCase());

export class ChatterBox extends Widget {
  /**
   * @param {HTMLElement} node
   * @param {string | null} username  known from the session on a reload
   */
  constructor(node, username) {
    super(node);
    this.username = username;
    this.messages = node.querySelector(".messages");
    this.peopleList = node.querySelector(".people");
    // Who came and went is announced, except those already here when this
    // tab entered (its first snapshot).
    this.snapshotSeen = false;
    this.quiet = false;
    this.people = new PresenceList({
      onJoin: (name, before) => { if (!before && !this.quiet) this.announce(`${name} joined the room`); },
      onLeave: (name, after) => { if (!after && !this.quiet) this.announce(`${name} left the room`); },
      onSync: (people) => this.showPeople(people.keys(byName)),
    });
  }

  loaded() {
    if (this.username) this.showRoom();
    else this.node.querySelector("[name=username]").focus();
  }

  /** Bound to the name form's submit (data-athena-on). */
  async setName(event) {
    const input = this.node.querySelector("[name=username]");
    await this.callRemote("setUsername", input.value);
    this.username = input.value.trim();
    this.showRoom();
  }

  /** Bound to the message form's submit (data-athena-on). */
  async send(event) {
    const input = this.node.querySelector("[name=text]");
    const text = input.value;
    if (!text.trim()) return;
    input.value = "";
    await this.callRemote("say", text);
  }

  showRoom() {
    this.node.querySelector(".name-form").hidden = true;
    this.node.querySelector(".room").hidden = false;
    this.node.querySelector("[name=text]").focus();
  }

  /** Called by the server for every message said in the room. */
  hear(sayer, text) {
    const item = this.addLine("message");
    const who = item.appendChild(document.createElement("strong"));
    who.textContent = sayer;
    item.append(": ", text);  // text nodes: HTML in a message shows as text
  }

  /** Called by the server with everybody present (entering the room). */
  presence_state(table) {
    this.quiet = !this.snapshotSeen;
    try {
      this.people.setState(table);
    } finally {
      this.quiet = false;
      this.snapshotSeen = true;
    }
  }

  /** Called by the server when somebody joins or leaves (one diff). */
  presence_diff(joins, leaves) {
    this.people.applyDiff(joins, leaves);
  }

  announce(text) {
    this.addLine("announce").textContent = text;
  }

  showPeople(names) {
    this.peopleList.replaceChildren(...names.map((name) => {
      const li = document.createElement("li");
      li.textContent = name;
      return li;
    }));
  }

  addLine(kind) {
    const item = document.createElement("li");
    item.className = kind;
    this.messages.append(item);
    item.scrollIntoView({ block: "nearest" });
    return item;
  }
}
