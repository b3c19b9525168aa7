/** What travels one direction of a tunnel: a chunk of bytes, or the sender's half-close. */
export type Frame = { kind: "data"; data: Uint8Array } | { kind: "eof" };

export const EOF: Frame = { kind: "eof" };

/**
 * One direction of a tunnel inside the coordinator: frames read from one side wait here until
 * the other side has taken them. `push` waits while `limitBytes` or more are held, so the relay
 * never reads from a sender faster than the receiver drains, and what one tunnel holds stays
 * under `limitBytes` plus one frame. A chunk counts as held from `push` until `release` (after
 * it was written onward), so the count includes the frame being written. `onHeld` reports every
 * change, for the coordinator-wide gauge.
 */
export class FrameQueue {
  private readonly frames: Frame[] = [];
  private held = 0;
  private waiters: (() => void)[] = [];

  constructor(
    private readonly limitBytes: number,
    private readonly signal: AbortSignal,
    private readonly onHeld: (delta: number) => void = () => {},
  ) {
    signal.addEventListener("abort", () => this.wake(), { once: true });
  }

  /** Bytes read from the sender and not yet released by the receiver. */
  get heldBytes(): number {
    return this.held;
  }

  /** Queues a frame once there is room; rejects with the abort reason when the tunnel ends. */
  async push(frame: Frame): Promise<void> {
    for (;;) {
      this.signal.throwIfAborted();
      if (this.held < this.limitBytes) break;
      await this.changed();
    }
    if (frame.kind === "data") this.adjust(frame.data.length);
    this.frames.push(frame);
    this.wake();
  }

  /** The next frame; rejects with the abort reason when the tunnel ends. */
  async pull(): Promise<Frame> {
    for (;;) {
      this.signal.throwIfAborted();
      const frame = this.frames.shift();
      if (frame) return frame;
      await this.changed();
    }
  }

  /** The receiver has written a pulled data frame onward: its bytes no longer count. */
  release(frame: Frame): void {
    if (frame.kind === "data") this.adjust(-frame.data.length);
    this.wake();
  }

  /** Gives back whatever is still held (the tunnel is over). */
  drop(): void {
    this.adjust(-this.held);
    this.frames.length = 0;
    this.wake();
  }

  private adjust(delta: number): void {
    this.held += delta;
    this.onHeld(delta);
  }

  private changed(): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}
