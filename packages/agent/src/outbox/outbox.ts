import { mkdir, open, readFile, readdir, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { writeFileDurable } from "../durable.ts";

/** One message waiting for the coordinator's acknowledgement. */
export interface OutboxRecord {
  stream: string;
  /** 1, 2, 3, ... per stream; never reused, also not after a restart or after everything was acked. */
  seq: number;
  /** When it was appended, in ms since the epoch. */
  time: number;
  /** Opaque to the outbox; the agent stores a serialized protobuf. */
  body: Uint8Array;
}

/** What the outbox keeps in memory per record; bodies stay on disk until pending() reads them. */
interface Entry {
  stream: string;
  seq: number;
  /** Global append order, so pending() interleaves streams as they were appended, across restarts. */
  order: bigint;
  file: string;
}

const STREAM_RE = /^[a-z0-9_-]{1,64}$/;
const RECORD_RE = /^([a-z0-9_-]{1,64})-(\d{20})\.rec$/;
const SEQ_RE = /^([a-z0-9_-]{1,64})\.seq$/;

// Record file: magic, crc32, order (u64), time ms (u64), body length (u32), body. The crc32
// covers the file name too, so a record cannot pass for another stream's or seq's.
const MAGIC = Buffer.from("FOB1");
const HEADER = 28;

/**
 * The agent's durable outbox (docs/architecture.md, decision 4): whatever the agent must tell the coordinator
 * is appended here and deleted only once the coordinator acknowledged it.
 *
 * One file per record (`<stream>-<seq>.rec`), written to a temporary name, fsynced, renamed and
 * the directory fsynced, so a crash leaves each record whole or absent. `<stream>.seq` remembers
 * the highest seq handed out once its records are gone. Appends and acks run one at a time, so
 * each append costs two fsyncs; batch small messages into one record if that is too slow.
 */
export class Outbox {
  /** Records dropped because their checksum failed (at open, or later when read). */
  corrupted = 0;

  private readonly lastSeq = new Map<string, number>();
  private readonly persistedSeq = new Map<string, number>();
  private entries: Entry[] = [];
  private nextOrder = 0n;
  private readonly listeners = new Set<() => void>();
  private tail: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly dir: string,
    private readonly dirHandle: FileHandle,
  ) {}

  /**
   * Opens (creating with mode 0700) the outbox in `dir` and recovers it after a crash: leftover
   * temporary files are removed, and so are records whose checksum fails (counted in `corrupted`).
   * Reads every record once, so it costs time proportional to the backlog.
   */
  static async open(dir: string): Promise<Outbox> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const box = new Outbox(dir, await open(dir, "r"));
    try {
      await box.recover();
    } catch (err) {
      await box.dirHandle.close();
      throw err;
    }
    return box;
  }

  /**
   * Appends a record with the stream's next seq and resolves once it is durable (file and
   * directory fsynced). Throws for a stream name outside [a-z0-9_-]{1,64}.
   */
  async append(stream: string, body: Uint8Array): Promise<OutboxRecord> {
    checkStream(stream);
    return await this.exclusive(async () => {
      const seq = (this.lastSeq.get(stream) ?? 0) + 1;
      // Taken before writing: a failed append leaves a gap rather than two bodies with one seq.
      this.lastSeq.set(stream, seq);
      const order = this.nextOrder++;
      const time = Date.now();
      const file = recordName(stream, seq);
      await this.writeDurably(file, encodeRecord(file, order, time, body));
      this.entries.push({ stream, seq, order, file });
      for (const listener of this.listeners) {
        try {
          listener();
        } catch {
          // A listener's failure is its own business; the record is safely stored.
        }
      }
      return { stream, seq, time, body };
    });
  }

  /**
   * Up to `limit` records, oldest first across all streams, stopping before `maxBytes` of bodies
   * (but always at least one record, so a big one cannot block the rest).
   */
  async pending(limit: number, maxBytes = Number.POSITIVE_INFINITY): Promise<OutboxRecord[]> {
    this.checkOpen();
    const out: OutboxRecord[] = [];
    let bytes = 0;
    for (const entry of this.entries.slice()) {
      if (out.length >= limit) break;
      let data: Buffer;
      try {
        data = await readFile(join(this.dir, entry.file));
      } catch (err) {
        // Acked while we were reading: the coordinator has it already.
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue;
        throw err;
      }
      const rec = decodeRecord(entry.file, data);
      if (!rec) {
        await this.drop(entry);
        continue;
      }
      if (out.length > 0 && bytes + rec.body.length > maxBytes) break;
      bytes += rec.body.length;
      out.push({ stream: entry.stream, seq: entry.seq, time: rec.time, body: rec.body });
    }
    return out;
  }

  /**
   * Deletes every record of `stream` with a seq up to `seq`. An ack beyond the last seq handed
   * out raises the stream's counter to it, so new records are not taken for duplicates.
   */
  async ack(stream: string, seq: number): Promise<void> {
    checkStream(stream);
    if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`invalid outbox seq ${seq}`);
    await this.exclusive(async () => {
      const last = this.lastSeq.get(stream) ?? 0;
      const high = Math.max(last, seq);
      const done = this.entries.filter((e) => e.stream === stream && e.seq <= seq);
      if (done.length === 0 && seq <= last) return;
      // The counter must be on disk before the records that carry it are deleted.
      if ((this.persistedSeq.get(stream) ?? 0) < high) {
        await this.writeDurably(`${stream}.seq`, Buffer.from(`${high}\n`));
        this.persistedSeq.set(stream, high);
      }
      this.lastSeq.set(stream, high);
      const gone = new Set(done);
      this.entries = this.entries.filter((e) => !gone.has(e));
      for (const e of done) await unlinkIfExists(join(this.dir, e.file));
      if (done.length > 0) await this.dirHandle.sync();
    });
  }

  /** How many records wait for an acknowledgement. */
  size(): number {
    return this.entries.length;
  }

  /** Calls `listener` after every durable append; returns a function that unsubscribes it. */
  onAppend(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Waits for running appends and acks, then closes; further calls throw. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.tail;
    this.listeners.clear();
    await this.dirHandle.close();
  }

  private async recover(): Promise<void> {
    const names = await readdir(this.dir);
    const found: Entry[] = [];
    let removed = false;
    for (const name of names) {
      if (name.endsWith(".tmp")) {
        await unlinkIfExists(join(this.dir, name));
        removed = true;
        continue;
      }
      const seqFile = SEQ_RE.exec(name);
      if (seqFile) {
        const value = Number.parseInt(await readFile(join(this.dir, name), "utf8"), 10);
        if (Number.isSafeInteger(value) && value > 0) {
          const stream = seqFile[1]!;
          this.persistedSeq.set(stream, value);
          this.raiseSeq(stream, value);
        }
        continue;
      }
      const rec = RECORD_RE.exec(name);
      if (!rec) continue;
      const decoded = decodeRecord(name, await readFile(join(this.dir, name)));
      if (!decoded) {
        await unlinkIfExists(join(this.dir, name));
        this.corrupted++;
        removed = true;
        continue;
      }
      const entry: Entry = { stream: rec[1]!, seq: Number(rec[2]), order: decoded.order, file: name };
      found.push(entry);
      this.raiseSeq(entry.stream, entry.seq);
      if (decoded.order >= this.nextOrder) this.nextOrder = decoded.order + 1n;
    }
    found.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
    this.entries = found;
    if (removed) await this.dirHandle.sync();
  }

  private raiseSeq(stream: string, seq: number): void {
    if (seq > (this.lastSeq.get(stream) ?? 0)) this.lastSeq.set(stream, seq);
  }

  private async drop(entry: Entry): Promise<void> {
    if (!this.entries.includes(entry)) return;
    this.entries = this.entries.filter((e) => e !== entry);
    this.corrupted++;
    await unlinkIfExists(join(this.dir, entry.file));
  }

  /** Writes `name` atomically: temporary file, fsync, rename, directory fsync. */
  private writeDurably(name: string, data: Uint8Array): Promise<void> {
    const path = join(this.dir, name);
    return writeFileDurable(path, data, { tmp: `${path}.tmp`, syncDir: () => this.dirHandle.sync() });
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.checkOpen();
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  private checkOpen(): void {
    if (this.closed) throw new Error("outbox is closed");
  }
}

function checkStream(stream: string): void {
  if (!STREAM_RE.test(stream)) throw new Error(`invalid outbox stream name ${JSON.stringify(stream)}: want [a-z0-9_-]{1,64}`);
}

function recordName(stream: string, seq: number): string {
  return `${stream}-${String(seq).padStart(20, "0")}.rec`;
}

function encodeRecord(name: string, order: bigint, time: number, body: Uint8Array): Buffer {
  const buf = Buffer.alloc(HEADER + body.length);
  MAGIC.copy(buf, 0);
  buf.writeBigUInt64BE(order, 8);
  buf.writeBigUInt64BE(BigInt(time), 16);
  buf.writeUInt32BE(body.length, 24);
  buf.set(body, HEADER);
  buf.writeUInt32BE(crc32(buf.subarray(8), crc32(name)), 4);
  return buf;
}

function decodeRecord(name: string, data: Buffer): { order: bigint; time: number; body: Uint8Array } | undefined {
  if (data.length < HEADER || !data.subarray(0, 4).equals(MAGIC)) return undefined;
  if (data.readUInt32BE(24) !== data.length - HEADER) return undefined;
  if (data.readUInt32BE(4) !== crc32(data.subarray(8), crc32(name))) return undefined;
  return {
    order: data.readBigUInt64BE(8),
    time: Number(data.readBigUInt64BE(16)),
    body: new Uint8Array(data.subarray(HEADER)),
  };
}

async function unlinkIfExists(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}
