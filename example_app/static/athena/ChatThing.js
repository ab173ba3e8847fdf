// The tutorial's chat widget: `say` goes to the server, `hear` comes back.
import { Widget } from "athena";

export class ChatterBox extends Widget {
  /**
   * @param {HTMLElement} node
   * @param {string | null} username  known from the session on a reload
   */
  constructor(node, username) {
    super(node);
    this.username = username;
    this.messages = node.querySelector(".messages");
    this.people = node.querySelector(".people");
  }

  loaded() {
    if (this.username) this.showRoom();
    else this.node.querySelector("[name=username]").focus();
  }

  /** Bound to the name form's submit (data-athena-on). */
  async setName(event) {
    const input = this.node.querySelector("[name=username]");
    const names = await this.callRemote("setUsername", input.value);
    this.username = input.value.trim();
    this.presence(names);
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

  /** Called by the server when somebody joins or leaves. */
  announce(text) {
    this.addLine("announce").textContent = text;
  }

  /** Called by the server with everybody present. */
  presence(names) {
    this.people.replaceChildren(...names.map((name) => {
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
