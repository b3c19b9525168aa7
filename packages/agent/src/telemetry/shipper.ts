import { Code, ConnectError } from "@connectrpc/connect";
import { retryDelay, Wakeup, type Logger } from "@flotilla/protocol/agent";
import { describeError } from "../exit.ts";
import type { BufferedRecord, DropStats, SegmentBuffer } from "./segment-buffer.ts";

/** Sends one batch; resolves with the highest contiguous seq the coordinator acknowledged. */
export type SendBatch = (records: BufferedRecord[], drops: DropStats, signal: AbortSignal) => Promise<number>;

export interface ShipperOptions {
  batchRecords: number;
  batchBytes: number;
  backoffMinMs: number;
  backoffMaxMs: number;
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
      if (records.length === 0) {
        await this.wake.wait(signal);
        continue;
      }
      try {
        const acked = await send(records, this.buffer.drops(), signal);
        const before = this.buffer.acked;
        await this.buffer.ack(acked);
        if (this.buffer.acked > before) {
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
}
