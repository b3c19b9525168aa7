import { promisify } from "node:util";
import { gunzip as gunzipCb, gunzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { agentv1, Semaphore } from "@flotilla/protocol";

export const STREAM_RE = /^[a-z0-9_-]{1,64}$/;
export const UNIT_RE = /^[A-Za-z0-9_.@:-]{1,128}$/;
export const MAX_LINE_CHARS = 64 * 1024;
export const MAX_RECORDS = 20_000;
/** Largest payload once decompressed: a guard against compression bombs. */
export const MAX_INFLATED = 64 * 1024 * 1024;
/** Batches decompressed at once: each may hold up to MAX_INFLATED bytes while it inflates. */
const MAX_INFLATING = 2;

/**
 * A payload this small is first inflated at once, on the event loop, up to SYNC_INFLATED bytes
 * (a millisecond or two at worst): an idle device's batch is a few hundred bytes, and zlib's
 * thread pool costs about 110 µs of CPU per call against 20 µs inline. Larger output goes the
 * thread pool's way.
 */
const SYNC_PAYLOAD = 64 * 1024;
const SYNC_INFLATED = 1024 * 1024;

const bad = (msg: string) => new ConnectError(msg, Code.InvalidArgument);
const gunzip = promisify(gunzipCb);
const inflating = new Semaphore(MAX_INFLATING);

/**
 * The payload, decompressed as the request says, within MAX_INFLATED. A small one inflates at
 * once (SYNC_PAYLOAD); otherwise zlib works on the thread
 * pool in chunks, so the event loop keeps serving while a batch inflates; it stops at the first
 * chunk beyond the limit (a gzip bomb costs at most MAX_INFLATED bytes of memory, not its full
 * size) and the batch is refused whole with ResourceExhausted.
 */
export async function inflate(compression: agentv1.Compression, payload: Uint8Array): Promise<Uint8Array> {
  if (compression === agentv1.Compression.UNSPECIFIED) return payload;
  if (compression !== agentv1.Compression.GZIP) throw bad("unknown compression");
  if (payload.length <= SYNC_PAYLOAD) {
    try {
      return gunzipSync(payload, { maxOutputLength: SYNC_INFLATED });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ERR_BUFFER_TOO_LARGE") throw bad("payload is not valid gzip");
    }
  }
  try {
    return await inflating.run(() => gunzip(payload, { maxOutputLength: MAX_INFLATED }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
      throw new ConnectError(`payload inflates beyond ${MAX_INFLATED} bytes`, Code.ResourceExhausted);
    }
    throw bad("payload is not valid gzip");
  }
}

/** Checks seqs are positive, safe integers and strictly ascending; returns them as numbers. */
export function checkSeqs(seqs: bigint[]): number[] {
  if (seqs.length > MAX_RECORDS) throw new ConnectError(`at most ${MAX_RECORDS} records per batch`, Code.ResourceExhausted);
  const out: number[] = [];
  let prev = 0;
  for (const s of seqs) {
    const n = Number(s);
    if (s <= 0n || s > BigInt(Number.MAX_SAFE_INTEGER) || n <= prev) throw bad("record seqs must be positive and strictly ascending");
    out.push(n);
    prev = n;
  }
  return out;
}

/** Unsettled ranges one drop report may carry (the agent keeps at most as many). */
export const MAX_UNSETTLED_RANGES = 16;

/**
 * The drop report, in range. dropped_through may reach into or beyond the batch: the buffer may
 * drop records while a batch of them is on its way; those seqs then count as delivered.
 * Unsettled ranges must be ascending, disjoint and at or below dropped_through.
 */
export function checkDrops(d: agentv1.DropReport | undefined): { droppedThrough: number; droppedTotal: number; unsettled?: { from: number; to: number }[] } {
  const through = Number(d?.droppedThrough ?? 0n);
  const total = Number(d?.droppedTotal ?? 0n);
  if (!Number.isSafeInteger(through) || !Number.isSafeInteger(total)) throw bad("drop counts out of range");
  const ranges = d?.unsettled ?? [];
  if (ranges.length === 0) return { droppedThrough: through, droppedTotal: total };
  if (ranges.length > MAX_UNSETTLED_RANGES) throw bad(`at most ${MAX_UNSETTLED_RANGES} unsettled ranges`);
  const unsettled: { from: number; to: number }[] = [];
  let prev = 0n;
  for (const r of ranges) {
    if (r.firstSeq <= prev || r.lastSeq < r.firstSeq || r.lastSeq > BigInt(through)) {
      throw bad("unsettled ranges must be ascending, disjoint and at or below dropped_through");
    }
    unsettled.push({ from: Number(r.firstSeq), to: Number(r.lastSeq) });
    prev = r.lastSeq;
  }
  return { droppedThrough: through, droppedTotal: total, unsettled };
}

/**
 * How far ahead of the coordinator's clock a device may claim a capture time. A device clock an
 * hour or a day off is common (no RTC battery, no NTP yet) and shown as the device tells it;
 * beyond this, the claim is stored as this far ahead (the claim itself is kept as claimed_time),
 * so a device cannot keep its lines at the top of its organization's newest lines for years.
 */
export const MAX_CLAIM_AHEAD_MS = 24 * 3_600_000;

/** The capture time the coordinator stores for a device's claim: at most MAX_CLAIM_AHEAD_MS after it received it. */
export function boundTime(claimed: number, receivedAt: number): number {
  return Math.min(claimed, receivedAt + MAX_CLAIM_AHEAD_MS);
}

/** A claimed time in milliseconds since the epoch, within what a JavaScript Date can hold. */
export function checkTime(t: bigint): number {
  const n = Number(t);
  if (!Number.isSafeInteger(n) || n < 0 || n > 8_640_000_000_000_000) throw bad("record time out of range");
  return n;
}
