import { mkdir, open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { fsyncDir } from "../durable.ts";
import { dropBeforeGaps, MAX_UNSETTLED, readRange, readSegmentDir, writeState, type BufferState, type DropStats, type Segment, type SeqRange } from "./segment-dir.ts";
import { encodeRecord, parseRecords, RecordKind, segmentName } from "./segment-file.ts";

export type { DropStats, SeqRange } from "./segment-dir.ts";

/** A record handed back for shipping. */
export interface BufferedRecord {
  /** 1, 2, 3, ...: only grows, also across restarts and after everything was acknowledged. */
  seq: number;
  /** Capture time, ms since the epoch. */
  time: number;
  body: Uint8Array;
}

export interface SegmentBufferOptions {
  /** Upper bound of all segment files together, in bytes; the oldest data is dropped to stay under it. */
  maxBytes: number;
  /** Size at which a new segment file starts (default: maxBytes/16, between 4 KiB and 16 MiB). */
  segmentBytes?: number;
  /** How long written data may wait for fsync (default 1000 ms); 0 fsyncs every append. */
  fsyncIntervalMs?: number;
}

/**
 * A durable, bounded, append-only buffer of records (log lines, metric samples) waiting for the
 * coordinator's acknowledgement: the agent's side of at-least-once delivery.
 *
 * Records go into segment files (`seg-N.log`), each record with a crc32, appended with one
 * write per batch. `state.json` (replaced atomically) keeps the acknowledged seq, the drop
 * counters and capture cursors, so seqs never go back after a restart. A segment is deleted
 * once everything in it is acknowledged, or, when the files would exceed `maxBytes`, the oldest
 * one is dropped unshipped and counted. Records that a read() handed out before their segment
 * was dropped may still reach the coordinator: the batch's answer settles them as delivered. When
 * no answer comes (the next read starts before them, or the agent stopped while they were out),
 * only the coordinator knows whether it holds them: they become an unsettled range, which goes
 * with the drop report until an answer says how many of them the coordinator holds (see ack).
 *
 * Durability: append() resolves once the data is written to the operating system, so a killed
 * agent (SIGKILL, crash) loses nothing appended. fsync runs at most `fsyncIntervalMs` later
 * (and at every segment change and close), so a power cut can lose the last interval's records,
 * never more; a record torn by the cut fails its checksum and is cut off at the next open.
 */
export class SegmentBuffer {
  /** Records cut off at open because their checksum or framing failed. */
  corrupted = 0;

  private segments: Segment[] = [];
  private active: { seg: Segment; fh: FileHandle } | undefined;
  private state: BufferState = { acked: 0, droppedThrough: 0, droppedTotal: 0, cursors: {} };
  private nextSeq = 1;
  private tail: Promise<unknown> = Promise.resolve();
  private syncTimer: NodeJS.Timeout | undefined;
  private readonly listeners = new Set<() => void>();
  private readPos: { index: number; offset: number; seq: number } | undefined;
  /** The last seq the latest read() handed out: records up to it may be on their way to the coordinator. */
  private handedOut = 0;
  private readonly segmentBytes: number;
  private readonly fsyncIntervalMs: number;

  private constructor(
    private readonly dir: string,
    private readonly opts: SegmentBufferOptions,
  ) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 16 * 1024) throw new Error("a log buffer needs at least 16 KiB");
    this.segmentBytes = opts.segmentBytes ?? Math.min(16 << 20, Math.max(4096, Math.floor(opts.maxBytes / 16)));
    this.fsyncIntervalMs = opts.fsyncIntervalMs ?? 1000;
  }

  /** Opens (creating, mode 0700) the buffer in `dir`; cuts off torn tails and removes acknowledged segments. */
  static async open(dir: string, opts: SegmentBufferOptions): Promise<SegmentBuffer> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const b = new SegmentBuffer(dir, opts);
    await b.recover();
    return b;
  }

  /** Largest body one record may have: a quarter of a segment. */
  get maxRecordBytes(): number {
    return Math.floor(this.segmentBytes / 4);
  }

  /** The highest acknowledged seq. */
  get acked(): number {
    return this.state.acked;
  }

  /** The last seq handed out (0 before the first record). */
  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  /** Bytes on disk in segment files. */
  get bytes(): number {
    return this.segments.reduce((n, s) => n + s.bytes, 0);
  }

  drops(): DropStats {
    const d: DropStats = { droppedThrough: this.state.droppedThrough, droppedTotal: this.state.droppedTotal };
    if (this.state.unsettled?.length) d.unsettled = this.state.unsettled.map((r) => ({ ...r }));
    return d;
  }

  /** The cursor a capture source stored with its last records (see append). */
  cursor(key: string): string | undefined {
    return this.state.cursors[key];
  }

  /** Calls `fn` after each append; returns the unsubscribe function. */
  onAppend(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => void this.listeners.delete(fn);
  }

  /**
   * Appends records in order, each with the next seq, and, in the same write, cursors that say
   * how far their sources got (so a restarted source neither repeats nor skips lines). Resolves
   * with the last seq once written (see the class comment for durability). A body larger than
   * maxRecordBytes throws.
   */
  append(items: { time: number; body: Uint8Array }[], cursors: Record<string, string> = {}): Promise<number> {
    for (const it of items) if (it.body.length > this.maxRecordBytes) throw new Error(`record of ${it.body.length} bytes exceeds ${this.maxRecordBytes}`);
    return this.serial(async () => {
      const startSeq = this.nextSeq;
      const datas = items.map((it) => {
        const seq = this.nextSeq++;
        return { seq, buf: encodeRecord(RecordKind.Data, seq, it.time, it.body) };
      });
      const cursorBufs = Object.entries(cursors).map(([k, v]) => encodeRecord(RecordKind.Cursor, 0, Date.now(), Buffer.from(JSON.stringify([k, v]))));
      let chunk: Buffer[] = [];
      let chunkBytes = 0;
      let first = 0;
      let last = 0;
      const flush = async () => {
        if (chunkBytes === 0) return;
        await this.writeChunk(Buffer.concat(chunk, chunkBytes), first, last);
        chunk = [];
        chunkBytes = 0;
        first = 0;
        last = 0;
      };
      const all = [...datas, ...cursorBufs.map((buf) => ({ seq: 0, buf }))];
      try {
        for (const r of all) {
          const room = this.segmentBytes - (this.active?.seg.bytes ?? this.segmentBytes) - chunkBytes;
          if (r.buf.length > room) {
            await flush();
            await this.roll();
          }
          chunk.push(r.buf);
          chunkBytes += r.buf.length;
          if (r.seq) {
            if (!first) first = r.seq;
            last = r.seq;
          }
        }
        await flush();
      } catch (err) {
        // A failed write (disk full) must not leave a gap in the seqs: hand out again what was not written.
        this.nextSeq = Math.max(startSeq, (this.segments.at(-1)?.lastSeq ?? 0) + 1);
        if (this.active) await this.active.fh.truncate(this.active.seg.bytes).catch(() => {});
        throw err;
      }
      Object.assign(this.state.cursors, cursors);
      this.scheduleSync();
      for (const fn of this.listeners) fn();
      return this.nextSeq - 1;
    });
  }

  /**
   * Up to `maxRecords` records (and about `maxBytes`) with seq above `afterSeq`, in seq order.
   * Reading again gives up on the records the previous read handed out and no ack covered.
   */
  read(afterSeq: number, maxRecords: number, maxBytes: number): Promise<BufferedRecord[]> {
    return this.serial(async () => {
      if (this.settleInFlight(afterSeq, false)) await writeState(this.dir, this.state);
      const out = await this.readRecords(afterSeq, maxRecords, maxBytes);
      this.handedOut = out.at(-1)?.seq ?? 0;
      return out;
    });
  }

  private async readRecords(afterSeq: number, maxRecords: number, maxBytes: number): Promise<BufferedRecord[]> {
    const out: BufferedRecord[] = [];
    let bytes = 0;
    for (const seg of this.segments) {
      if (seg.lastSeq <= afterSeq) continue;
      const from = this.readPos && this.readPos.index === seg.index && this.readPos.seq <= afterSeq ? this.readPos.offset : 0;
      const { records } = parseRecords(await readRange(seg.path, from, seg.bytes - from, Math.max(maxBytes, this.maxRecordBytes) + 64 * 1024));
      for (const r of records) {
        if (r.kind !== RecordKind.Data || r.seq <= afterSeq) continue;
        if (out.length >= maxRecords || (bytes > 0 && bytes + r.body.length > maxBytes)) return out;
        out.push({ seq: r.seq, time: r.time, body: r.body });
        bytes += r.body.length;
        this.readPos = { index: seg.index, offset: from + r.offset + r.size, seq: r.seq };
      }
    }
    return out;
  }

  /**
   * Settles the records dropped from disk while they were out with a batch: delivered when the
   * batch was answered, else (beyond `deliveredThrough`) unsettled, for the coordinator to count.
   * True when the state changed.
   */
  private settleInFlight(deliveredThrough: number, answered: boolean): boolean {
    const f = this.state.inFlightDropped;
    if (!f) return false;
    delete this.state.inFlightDropped;
    const from = Math.max(f.from, deliveredThrough + 1);
    if (answered || from > f.to) return true;
    const list = this.state.unsettled ?? [];
    const prev = list.at(-1);
    if (prev && prev.to + 1 >= from) prev.to = Math.max(prev.to, f.to);
    else list.push({ from, to: f.to });
    // Beyond the bound, the oldest count as dropped, as if the coordinator held none of them.
    while (list.length > MAX_UNSETTLED) {
      const r = list.shift()!;
      this.state.droppedTotal += r.to - r.from + 1;
    }
    this.state.unsettled = list;
    return true;
  }

  /**
   * Takes `ranges` (sent with a batch) out of the unsettled ones and counts those of their seqs
   * that the coordinator does not hold (all but `held`) as dropped; true when the state changed.
   */
  private settleUnsettled(ranges: readonly SeqRange[], held: number): boolean {
    const list = this.state.unsettled ?? [];
    const sent = ranges.filter((r) => list.some((x) => x.from === r.from && x.to === r.to));
    if (sent.length === 0) return false;
    const seqs = sent.reduce((n, r) => n + r.to - r.from + 1, 0);
    this.state.droppedTotal += Math.max(0, seqs - held);
    const left = list.filter((x) => !sent.some((r) => r.from === x.from && r.to === x.to));
    if (left.length > 0) this.state.unsettled = left;
    else delete this.state.unsettled;
    return true;
  }

  /**
   * Records that every seq up to `seq` was delivered; deletes segments holding only such data.
   * `settled`: the unsettled ranges that went with the answered batch, and how many of their
   * seqs the coordinator said it holds (undefined: it did not say, so none count as held).
   */
  ack(seq: number, settled?: { ranges: readonly SeqRange[]; held: number | undefined }): Promise<void> {
    return this.serial(async () => {
      const upTo = Math.min(seq, this.nextSeq - 1);
      let changed = this.settleInFlight(upTo, true);
      if (settled && settled.ranges.length > 0) changed = this.settleUnsettled(settled.ranges, settled.held ?? 0) || changed;
      this.handedOut = 0;
      if (upTo <= this.state.acked) {
        if (changed) await writeState(this.dir, this.state);
        return;
      }
      this.state.acked = upTo;
      await writeState(this.dir, this.state);
      const done = this.segments.filter((s) => s !== this.active?.seg && s.lastSeq <= upTo);
      for (const s of done) await this.removeSegment(s);
    });
  }

  /** Flushes to disk and closes the active segment. */
  close(): Promise<void> {
    return this.serial(async () => {
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      if (this.active) {
        await this.active.fh.sync();
        await this.active.fh.close();
        this.active = undefined;
      }
    });
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => {});
    return run;
  }

  private async writeChunk(buf: Buffer, first: number, last: number): Promise<void> {
    // Hold the bound: drop the oldest segments (unshipped data is counted) until the chunk fits.
    while (this.bytes + buf.length > this.opts.maxBytes && this.segments.length > 0) {
      await this.dropOldest();
    }
    if (!this.active) await this.roll();
    const a = this.active!;
    let written = 0;
    while (written < buf.length) written += (await a.fh.write(buf, written, buf.length - written)).bytesWritten;
    a.seg.bytes += buf.length;
    if (first) {
      if (!a.seg.firstSeq) a.seg.firstSeq = first;
      a.seg.lastSeq = last;
    }
  }

  private async dropOldest(): Promise<void> {
    const s = this.segments[0]!;
    const from = Math.max(s.firstSeq, this.state.acked + 1);
    if (s.lastSeq >= from) {
      // Handed out and maybe delivered: settled by the batch's ack or the next read.
      const out = Math.min(s.lastSeq, this.handedOut);
      if (out >= from) {
        const f = this.state.inFlightDropped;
        this.state.inFlightDropped = { from: f ? Math.min(f.from, from) : from, to: Math.max(f?.to ?? 0, out) };
      }
      this.state.droppedTotal += s.lastSeq - Math.max(from - 1, out);
    }
    if (s.lastSeq > this.state.droppedThrough) this.state.droppedThrough = s.lastSeq;
    await writeState(this.dir, this.state);
    if (this.active?.seg === s) {
      await this.active.fh.close();
      this.active = undefined;
    }
    await this.removeSegment(s);
  }

  private async removeSegment(s: Segment): Promise<void> {
    this.segments = this.segments.filter((x) => x !== s);
    if (this.readPos?.index === s.index) this.readPos = undefined;
    await unlink(s.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
    });
  }

  /** Closes the active segment (fsynced) and starts a new, empty one. */
  private async roll(): Promise<void> {
    if (this.active) {
      await this.active.fh.sync();
      await this.active.fh.close();
      this.active = undefined;
    }
    const index = (this.segments.at(-1)?.index ?? 0) + 1;
    const seg: Segment = { index, path: join(this.dir, segmentName(index)), bytes: 0, firstSeq: 0, lastSeq: 0 };
    const fh = await open(seg.path, "a", 0o600);
    this.segments.push(seg);
    this.active = { seg, fh };
    await fsyncDir(this.dir);
  }

  private scheduleSync(): void {
    if (this.fsyncIntervalMs === 0) {
      void this.active?.fh.datasync();
      return;
    }
    if (this.syncTimer) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.serial(async () => this.active?.fh.datasync());
    }, this.fsyncIntervalMs);
    this.syncTimer.unref();
  }

  private async recover(): Promise<void> {
    const found = await readSegmentDir(this.dir);
    this.state = found.state;
    // A batch out when the agent stopped: its answer is lost with the process.
    this.settleInFlight(this.state.acked, false);
    this.segments = found.segments;
    this.corrupted += found.corrupted;
    this.nextSeq = Math.max(this.state.acked, this.state.droppedThrough, ...this.segments.map((s) => s.lastSeq)) + 1;
    dropBeforeGaps(this.state, this.segments);
    await writeState(this.dir, this.state);
    const last = this.segments.at(-1);
    const done = Math.max(this.state.acked, this.state.droppedThrough);
    for (const s of this.segments.filter((x) => x !== last && (x.lastSeq <= done || x.bytes === 0))) {
      await this.removeSegment(s);
    }
    if (last && last.bytes < this.segmentBytes) this.active = { seg: last, fh: await open(last.path, "a", 0o600) };
  }
}

