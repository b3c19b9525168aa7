/**
 * The files of a SegmentBuffer's directory besides the record format (segment-file.ts):
 * `state.json`, what the segments hold, and reading both back after a crash.
 */
import { open, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileDurable } from "../durable.ts";
import { parseRecords, RecordKind, segmentIndex } from "./segment-file.ts";

/** Seqs `from..to`, both included. */
export interface SeqRange {
  from: number;
  to: number;
}

/** At most this many unsettled ranges wait for the coordinator's word; older ones count as dropped. */
export const MAX_UNSETTLED = 16;

/** What the buffer dropped unshipped to hold its size bound. */
export interface DropStats {
  /** Every seq up to this one was acknowledged or dropped; 0 when nothing was dropped. */
  droppedThrough: number;
  /** Records dropped before they were acknowledged, ever; the unsettled ones are not in it. */
  droppedTotal: number;
  /**
   * Seqs that went out in a batch whose answer never came and were dropped from disk since: only
   * the coordinator knows whether it holds them. Ascending, disjoint, at most MAX_UNSETTLED.
   */
  unsettled?: SeqRange[];
}

/** One segment file and the data it holds. */
export interface Segment {
  index: number;
  path: string;
  bytes: number;
  /** First and last data seq in the file; 0 when it holds none. Seqs in a segment are consecutive. */
  firstSeq: number;
  lastSeq: number;
}

/** `state.json`: the acknowledged seq, the drop counters and the capture sources' cursors. */
export interface BufferState extends DropStats {
  acked: number;
  cursors: Record<string, string>;
  /**
   * Seqs `from..to` were dropped from disk while a batch holding them was on its way to the
   * coordinator: they count as dropped only if that batch is not acknowledged.
   */
  inFlightDropped?: SeqRange;
}

const STATE = "state.json";

/** Replaces `state.json` atomically (temporary file, fsync, rename, directory fsync). */
export function writeState(dir: string, state: BufferState): Promise<void> {
  return writeFileDurable(join(dir, STATE), JSON.stringify(state), { tmp: join(dir, `${STATE}.tmp`) });
}

/**
 * Reads a buffer directory back: `state.json` and every segment in index order, each cut off
 * (truncated and fsynced) at its first damaged record. Cursor records found in the segments
 * update the state's cursors. `corrupted` counts the segments that were cut, and a damaged
 * `state.json` (read as absent).
 */
export async function readSegmentDir(dir: string): Promise<{ state: BufferState; segments: Segment[]; corrupted: number }> {
  const { state, damaged } = await readState(dir);
  const names = (await readdir(dir)).flatMap((n) => {
    const index = segmentIndex(n);
    return index === undefined ? [] : [{ n, index }];
  });
  names.sort((a, b) => a.index - b.index);
  const segments: Segment[] = [];
  let corrupted = damaged ? 1 : 0;
  let prevSeq = 0;
  for (const { n, index } of names) {
    const path = join(dir, n);
    const data = await readFile(path);
    const { records } = parseRecords(data);
    const seg: Segment = { index, path, bytes: 0, firstSeq: 0, lastSeq: 0 };
    let valid = 0;
    for (const r of records) {
      if (r.kind === RecordKind.Data) {
        // Seqs only grow: anything else is damage, and so is everything after it.
        if (r.seq <= prevSeq || (seg.lastSeq && r.seq !== seg.lastSeq + 1)) break;
        if (!seg.firstSeq) seg.firstSeq = r.seq;
        seg.lastSeq = prevSeq = r.seq;
      } else {
        try {
          const [k, v] = JSON.parse(r.body.toString("utf8")) as [string, string];
          state.cursors[k] = v;
        } catch {
          break;
        }
      }
      valid = r.offset + r.size;
    }
    if (valid < data.length) {
      corrupted++;
      const fh = await open(path, "r+");
      await fh.truncate(valid);
      await fh.sync();
      await fh.close();
    }
    seg.bytes = valid;
    segments.push(seg);
  }
  return { state, segments, corrupted };
}

/**
 * Damage inside an older segment leaves a hole in the seqs, which the coordinator could never
 * acknowledge past. Everything unacknowledged before such a hole counts as dropped instead (in
 * `state`), so shipping goes on (the segments themselves are removed with the acknowledged ones).
 */
export function dropBeforeGaps(state: BufferState, segments: readonly Segment[]): void {
  let expect = Math.max(state.acked, state.droppedThrough);
  for (const seg of segments) {
    if (!seg.firstSeq || seg.lastSeq <= expect) continue;
    if (seg.firstSeq > expect + 1) {
      state.droppedTotal += seg.firstSeq - 1 - Math.max(state.acked, state.droppedThrough);
      state.droppedThrough = seg.firstSeq - 1;
    }
    expect = seg.lastSeq;
  }
}

/** Reads up to `cap` of the `length` bytes at `offset` of a file. */
export async function readRange(path: string, offset: number, length: number, cap: number): Promise<Buffer> {
  const fh = await open(path, "r");
  try {
    const buf = Buffer.allocUnsafe(Math.max(0, Math.min(length, cap)));
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return buf.subarray(0, got);
  } finally {
    await fh.close();
  }
}

/**
 * Reads `state.json`. A damaged one (not JSON, not an object) counts as absent, and a counter
 * that is not a whole number as 0, so the buffer still opens: the segments say how far seqs got.
 */
async function readState(dir: string): Promise<{ state: BufferState; damaged: boolean }> {
  const fresh = (): BufferState => ({ acked: 0, droppedThrough: 0, droppedTotal: 0, cursors: {} });
  let text: string;
  try {
    text = await readFile(join(dir, STATE), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    return { state: fresh(), damaged: false };
  }
  let s: unknown;
  try {
    s = JSON.parse(text);
  } catch {
    return { state: fresh(), damaged: true };
  }
  if (typeof s !== "object" || s === null || Array.isArray(s)) return { state: fresh(), damaged: true };
  const { acked, droppedThrough, droppedTotal, cursors, inFlightDropped, unsettled } = s as Record<string, unknown>;
  const count = (v: unknown): number => (typeof v === "number" && Number.isSafeInteger(v) && v >= 0 ? v : 0);
  const strings = typeof cursors === "object" && cursors !== null && !Array.isArray(cursors) ? Object.entries(cursors).filter(([, v]) => typeof v === "string") : [];
  const state: BufferState = { acked: count(acked), droppedThrough: count(droppedThrough), droppedTotal: count(droppedTotal), cursors: Object.fromEntries(strings) as Record<string, string> };
  const range = (v: unknown): SeqRange | undefined => {
    if (typeof v !== "object" || v === null) return undefined;
    const { from, to } = v as Record<string, unknown>;
    return count(from) > 0 && count(to) >= count(from) ? { from: count(from), to: count(to) } : undefined;
  };
  const f = range(inFlightDropped);
  if (f) state.inFlightDropped = f;
  if (Array.isArray(unsettled)) {
    // Kept only as written: ascending, disjoint, within what was dropped.
    const ranges = unsettled.map(range).filter((r): r is SeqRange => r !== undefined && r.to <= state.droppedThrough);
    const ordered = ranges.every((r, i) => i === 0 || r.from > ranges[i - 1]!.to);
    if (ordered && ranges.length > 0) state.unsettled = ranges.slice(-MAX_UNSETTLED);
  }
  return { state, damaged: false };
}
