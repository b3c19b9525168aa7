import { Code, ConnectError } from "@connectrpc/connect";
import { retryDelay, Wakeup, type Logger } from "@flotilla/protocol/agent";
import { describeError } from "../exit.ts";
import type { BufferedRecord, DropStats, SegmentBuffer } from "./segment-buffer.ts";

/**
 * Sends one batch; resolves with the highest contiguous seq the coordinator acknowledged and, when
 * the drop report had unsettled ranges, how many of their seqs it holds (undefined if it did not say).
 */
export type SendBatch = (records: BufferedRecord[], drops: DropStats, signal: AbortSignal) => Promise<{ acked: number; unsettledHeld?: number }>;

export interface ShipperOptions {
  batchRecords: number;
  batchBytes: number;
  backoffMinMs: number;
  backoffMaxMs: number;
  /**
   * How long a batch that is not full waits for company: it goes once its oldest record is this
   * old (0: at once). Metric samples every 10 s shipped a minute at a time are one call a minute
   * instead of six, for the agent and for the coordinator.
   */
  lingerMs?: number;
}

/**
 * Drains a SegmentBuffer to the coordinator: oldest unacknowledged records first, one batch in
 * flight, acknowledged data deleted. While disconnected it waits; after a failed batch it backs
 * off and sends the same records again (the coordinator stores each seq once).
 */
export class Shipper {
  private send: SendBatch | undefined;
  private reconnect: (() => void) | undefined;
  private readonly wake = new Wakeup();
  private readonly offAppend: () => void;
  /** The oldest unshipped record a lingering batch waits on, and when it was first seen. */
  private held: { seq: number; since: number } | undefined;

  constructor(
    private readonly buffer: SegmentBuffer,
    private readonly name: string,
    private readonly opts: ShipperOptions,
    private readonly log: Logger,
  ) {
    this.offAppend = buffer.onAppend(() => this.wake.notify());
  }

  /**
   * Sets (or, with undefined, clears) how batches reach the coordinator. `reconnect` is called
   * when the coordinator no longer accepts the session (it expired), to get a fresh one.
   */
  connect(send: SendBatch | undefined, reconnect?: () => void): void {
    this.send = send;
    this.reconnect = reconnect;
    this.wake.notify();
  }

  async run(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      const send = this.send;
      if (!send) {
        await this.wake.wait(signal);
        continue;
      }
      const records = await this.buffer.read(this.buffer.acked, this.opts.batchRecords, this.opts.batchBytes);
      const drops = this.buffer.drops();
      // Nothing to ship, but seqs only the coordinator can settle: a batch of none asks it.
      if (records.length === 0 && !drops.unsettled) {
        await this.wake.wait(signal);
        continue;
      }
      const linger = records.length === 0 ? 0 : this.lingerFor(records);
      if (linger > 0 && failures === 0) {
        // An append wakes the loop early; it reads again and waits for what is left.
        await this.wake.wait(signal, linger);
        continue;
      }
      try {
        const { acked, unsettledHeld } = await send(records, drops, signal);
        const before = this.buffer.acked;
        await this.buffer.ack(acked, drops.unsettled && { ranges: drops.unsettled, held: unsettledHeld });
        if (this.buffer.acked > before || records.length === 0) {
          failures = 0;
          continue;
        }
        throw new Error(`the coordinator acknowledged seq ${acked}, not beyond ${before}`);
      } catch (err) {
        if (signal.aborted) return;
        if (ConnectError.from(err).code === Code.Unauthenticated) this.reconnect?.();
        if (failures === 0 || failures % 20 === 0) {
          this.log.warn(`could not ship ${this.name}`, { err: describeError(err), pending: this.buffer.lastSeq - this.buffer.acked });
        }
        await this.wake.wait(signal, retryDelay(err, failures++, this.opts.backoffMinMs, this.opts.backoffMaxMs));
      }
    }
  }

  close(): void {
    this.offAppend();
  }

  /** How much longer `records` should wait before they go: 0 when full or old enough. */
  private lingerFor(records: BufferedRecord[]): number {
    const lingerMs = this.opts.lingerMs ?? 0;
    if (lingerMs <= 0 || records.length >= this.opts.batchRecords) return 0;
    const head = records[0]!;
    const now = Date.now();
    if (this.held?.seq !== head.seq) this.held = { seq: head.seq, since: now };
    // From its capture time, or from when this shipper first saw it if that is earlier: a capture
    // time in the future (the clock was set back) cannot hold a batch longer than the linger.
    return Math.min(head.time, this.held.since) + lingerMs - now;
  }
}
