// Loaded on demand, for a widget the server passes to call_remote.
import { Child } from "Core";

export class Gadget extends Child {}
