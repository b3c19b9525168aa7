import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { agentv1, retryAfterMs, Wakeup, type Logger } from "@flotilla/protocol/agent";
import type { AgentClient } from "../connection/dial.ts";
import { describeError } from "../exit.ts";
import type { Outbox, OutboxRecord } from "./outbox.ts";

/** The one call the sender makes: AgentService.Report. */
export type ReportClient = Pick<AgentClient, "report">;

export interface OutboxSenderOptions {
  /** After a failed report, how long to wait for a new connection before trying again. */
  retryMs: number;
  /** Most records in one report (default 500). */
  batchRecords?: number;
  /** About the most body bytes in one report (default 1 MiB; a bigger record goes alone). */
  batchBytes?: number;
}

/**
 * Ships the agent's outbox (status, facts, release progress) to the coordinator: oldest
 * records first, one report at a time, while connected. A record is deleted only once the
 * coordinator acknowledged it (per stream, up to a seq); what was not acknowledged is sent
 * again. Also turns outbox entries into records (queue).
 */
export class OutboxSender {
  private client: ReportClient | undefined;
  private reconnect: (() => void) | undefined;
  private readonly connectionChanged = new Wakeup();
  private readonly outboxChanged = new Wakeup();
  private readonly offAppend: () => void;
  private readonly batchRecords: number;
  private readonly batchBytes: number;

  constructor(
    private readonly outbox: Outbox,
    private readonly opts: OutboxSenderOptions,
    private readonly log: Logger,
  ) {
    this.batchRecords = opts.batchRecords ?? 500;
    this.batchBytes = opts.batchBytes ?? 1024 * 1024;
    this.offAppend = outbox.onAppend(() => this.outboxChanged.notify());
  }

  /** Appends an entry with `body` to `stream` of the outbox; resolves once it is durable. */
  async queue(stream: string, body: agentv1.OutboxEntry["body"]): Promise<void> {
    await this.outbox.append(stream, toBinary(agentv1.OutboxEntrySchema, create(agentv1.OutboxEntrySchema, { body })));
  }

  /**
   * Sets (or, with undefined, clears) the connection reports go over. `reconnect` is called
   * when the coordinator no longer accepts the session (it expired), to get a fresh one.
   */
  connect(client: ReportClient | undefined, reconnect?: () => void): void {
    this.client = client;
    this.reconnect = reconnect;
    this.connectionChanged.notify();
  }

  /** Sends until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const client = this.client;
      if (!client) {
        await this.connectionChanged.wait(signal);
        continue;
      }
      const batch = await this.outbox.pending(this.batchRecords, this.batchBytes);
      if (batch.length === 0) {
        await Promise.race([this.outboxChanged.wait(signal), this.connectionChanged.wait(signal)]);
        continue;
      }
      try {
        const res = await client.report({ entries: batch.map(toEntry) }, { signal, timeoutMs: 30_000 });
        for (const ack of res.acks) await this.outbox.ack(ack.stream, Number(ack.seq));
      } catch (err) {
        if (signal.aborted) return;
        this.log.warn("could not deliver outbox", { err: describeError(err), pending: this.outbox.size() });
        // Sessions expire (--session-ttl-ms on the coordinator); a new connection authenticates anew.
        if (ConnectError.from(err).code === Code.Unauthenticated) this.reconnect?.();
        // A busy coordinator's advice, when it gave one, is the least wait.
        await this.connectionChanged.wait(signal, Math.max(this.opts.retryMs, retryAfterMs(err) ?? 0));
      }
    }
  }

  /** Stops listening to the outbox. */
  close(): void {
    this.offAppend();
  }
}

function toEntry(r: OutboxRecord): agentv1.OutboxEntry {
  const e = fromBinary(agentv1.OutboxEntrySchema, r.body);
  e.stream = r.stream;
  e.seq = BigInt(r.seq);
  e.time = timestampFromMs(r.time);
  return e;
}
