// Nested and dynamic widgets: each list item is a widget with its own methods.
import { Widget } from "athena";

export class List extends Widget {
  constructor(node) {
    super(node);
    this.items = node.querySelector(".items");
  }

  /** Bound to the add form: the server returns a new Item widget. */
  async add(event) {
    const input = this.node.querySelector("[name=text]");
    const item = await this.callRemote("add_item", input.value);
    input.value = "";
    this.items.append(item.node);
  }

  serverAdds() {
    return this.callRemote("server_adds");
  }

  clearDone() {
    return this.callRemote("clear_done");
  }

  /** Called by the server with a widget it created on its own. */
  insert_item(item) {
    this.items.append(item.node);
  }
}

export class Item extends Widget {
  constructor(node, done) {
    super(node);
    this.node.querySelector("input[type=checkbox]").checked = done;
    this.node.classList.toggle("done", done);
  }

  async toggle() {
    const done = await this.callRemote("toggle");
    this.node.classList.toggle("done", done);
  }

  removeOnServer() {
    return this.callRemote("remove");
  }

  detachHere() {
    return this.detach();
  }
}
