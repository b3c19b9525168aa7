/**
 * The signal that ends every open call when the coordinator stops, with O(1) cost per call.
 *
 * Connect links each call's context to the server's shutdown signal: one `abort` listener added
 * when the call starts and removed when it ends. On Node's AbortSignal both walk a linked list of
 * every listener (addEventListener looks for a duplicate, removeEventListener for the one to
 * take out), and every connected device holds a Watch stream with a listener on it: each report,
 * metric batch or keep-alive cost O(devices). Profiled at 2,000 idle devices, those two walks
 * were a fifth of the coordinator's CPU. Here listeners live in a Set.
 *
 * It is not an EventTarget: it has what Connect's createLinkedAbortController uses (`aborted`,
 * `reason`, add and remove of `abort` listeners, called with the signal as `this`). The
 * coordinator's shutdown test checks that stopping still ends open streams, should Connect
 * start using more of AbortSignal.
 */
export class ShutdownSignal {
  aborted = false;
  reason: unknown = undefined;
  private readonly listeners = new Set<(this: unknown, ev: Event) => unknown>();

  addEventListener(type: string, listener: ((this: unknown, ev: Event) => unknown) | { handleEvent(ev: Event): unknown } | null): void {
    if (type !== "abort" || listener === null) return;
    this.listeners.add(typeof listener === "function" ? listener : (ev) => listener.handleEvent(ev));
  }

  removeEventListener(type: string, listener: ((this: unknown, ev: Event) => unknown) | null): void {
    if (type === "abort" && listener !== null) this.listeners.delete(listener);
  }

  throwIfAborted(): void {
    if (this.aborted) throw this.reason;
  }

  /** How many calls are listening now. */
  get size(): number {
    return this.listeners.size;
  }

  /** Aborts every call still listening, once. */
  abort(reason: unknown = new DOMException("the coordinator is shutting down", "AbortError")): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    const ev = new Event("abort");
    for (const l of [...this.listeners]) l.call(this, ev);
    this.listeners.clear();
  }

  /** For Connect, which types the option as AbortSignal. */
  asAbortSignal(): AbortSignal {
    return this as unknown as AbortSignal;
  }
}
