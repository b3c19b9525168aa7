import { create, toBinary } from "@bufbuild/protobuf";
import { agentv1, type Logger } from "@flotilla/protocol/agent";
import type { SegmentBuffer } from "./segment-buffer.ts";

/** Unit names: what `flotilla logs --unit` filters on. */
export const UNIT_RE = /^[A-Za-z0-9_.@:-]{1,128}$/;

/** The unit the agent's own log goes to. */
export const AGENT_UNIT = "flotilla-agent";

/** Longest line kept, in bytes of UTF-8; longer lines are cut and marked with "…". */
export const MAX_LINE_BYTES = 16 * 1024;

/**
 * The agent-side entry point for log lines: supervised processes' output (the bundle activator
 * calls `append(unit, "stdout" | "stderr", line)`), the agent's own log, journal units and
 * tailed files. Lines are batched and written to the durable buffer on the next tick, in the
 * order they were appended, so a burst costs one write.
 */
export class LogCapture {
  private pending: { time: number; body: Uint8Array }[] = [];
  private chain: Promise<void> = Promise.resolve();
  private scheduled = false;

  constructor(
    readonly buffer: SegmentBuffer,
    private readonly onError: (err: unknown) => void = () => {},
  ) {}

  /**
   * Queues one line of `unit`'s `stream` (stdout, stderr, ...). Never throws and never waits: a
   * line is durable once the next flush (on the next tick) wrote it. An invalid unit name is
   * replaced by "invalid-unit".
   */
  append(unit: string, stream: string, line: string): void {
    this.pending.push(encodeLine(unit, stream, line, this.buffer.maxRecordBytes));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        this.flush().catch(this.onError);
      });
    }
  }

  /**
   * Appends lines together with a cursor in one write, after everything queued before: a source
   * that resumes from `cursor(key)` after a crash neither repeats nor skips a line.
   */
  appendWithCursor(unit: string, stream: string, lines: string[], key: string, cursor: string): Promise<void> {
    return this.serial(async () => {
      await this.writePending();
      const max = this.buffer.maxRecordBytes;
      await this.buffer.append(lines.map((l) => encodeLine(unit, stream, l, max)), { [key]: cursor });
    });
  }

  /** Where a source got to, as it last stored with appendWithCursor. */
  cursor(key: string): string | undefined {
    return this.buffer.cursor(key);
  }

  /** Writes every queued line; resolves once they are in the buffer. */
  flush(): Promise<void> {
    return this.serial(() => this.writePending());
  }

  private async writePending(): Promise<void> {
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    await this.buffer.append(batch);
  }

  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => {});
    return run;
  }
}

function encodeLine(unit: string, stream: string, line: string, maxBytes: number): { time: number; body: Uint8Array } {
  const limit = Math.min(MAX_LINE_BYTES, maxBytes - 256);
  let text = line.endsWith("\n") ? line.slice(0, -1) : line;
  if (Buffer.byteLength(text) > limit) text = `${Buffer.from(text).subarray(0, limit - 3).toString("utf8").replace(/\uFFFD$/, "")}…`;
  const record = create(agentv1.LogRecordSchema, {
    unit: UNIT_RE.test(unit) ? unit : "invalid-unit",
    source: stream.slice(0, 32),
    line: text,
  });
  return { time: Date.now(), body: toBinary(agentv1.LogRecordSchema, record) };
}

function format(fields: Record<string, unknown> | undefined): string {
  if (!fields) return "";
  return Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}=${typeof v === "string" && !/\s|"/.test(v) ? v : JSON.stringify(v)}`)
    .join("");
}

/** A logger that writes to `inner` and also captures every line into the agent's own unit. */
export function capturingLogger(inner: Logger, capture: LogCapture, base: Record<string, unknown> = {}): Logger {
  const emit = (level: "info" | "warn" | "error", msg: string, fields?: Record<string, unknown>) => {
    inner[level](msg, fields);
    capture.append(AGENT_UNIT, "stderr", `${level} ${msg}${format({ ...base, ...fields })}`);
  };
  return {
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (f) => capturingLogger(inner.child(f), capture, { ...base, ...f }),
  };
}
