import { crc32 } from "node:zlib";

/**
 * The on-disk record format of a segment file: length (u32, of everything after the checksum),
 * crc32 (u32, of everything after it), kind (u8), seq (u64), time in ms (u64), body.
 * Big-endian. A record whose length or checksum does not hold ends the readable part of a file.
 */
export const RECORD_HEADER = 25;

/** Data records carry a seq; cursor records remember how far a capture source got. */
export const RecordKind = { Data: 0, Cursor: 1 } as const;
export type RecordKind = (typeof RecordKind)[keyof typeof RecordKind];

/** A record as parsed from a segment file. */
export interface ParsedRecord {
  kind: RecordKind;
  seq: number;
  time: number;
  body: Buffer;
  /** Byte offset of the record's start in the file. */
  offset: number;
  /** Bytes the record takes in the file. */
  size: number;
}

/** Largest body a record may have; bigger lengths are taken for corruption. */
export const MAX_BODY = 16 * 1024 * 1024;

export function encodeRecord(kind: RecordKind, seq: number, time: number, body: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(RECORD_HEADER + body.length);
  buf.writeUInt32BE(body.length + RECORD_HEADER - 8, 0);
  buf.writeUInt8(kind, 8);
  buf.writeBigUInt64BE(BigInt(seq), 9);
  buf.writeBigUInt64BE(BigInt(Math.max(0, Math.trunc(time))), 17);
  buf.set(body, RECORD_HEADER);
  buf.writeUInt32BE(crc32(buf.subarray(8)), 4);
  return buf;
}

/**
 * Parses records from `data` starting at `from`, stopping at the end or at the first record that
 * is short, too long, of unknown kind or fails its checksum. Returns the records and the offset
 * where the valid part ends (a torn or corrupt tail starts there).
 */
export function parseRecords(data: Buffer, from = 0): { records: ParsedRecord[]; end: number } {
  const records: ParsedRecord[] = [];
  let off = from;
  while (off + RECORD_HEADER <= data.length) {
    const len = data.readUInt32BE(off);
    if (len < RECORD_HEADER - 8 || len - (RECORD_HEADER - 8) > MAX_BODY) break;
    const size = len + 8;
    if (off + size > data.length) break;
    const payload = data.subarray(off + 8, off + size);
    if (crc32(payload) !== data.readUInt32BE(off + 4)) break;
    const kind = data.readUInt8(off + 8);
    if (kind !== RecordKind.Data && kind !== RecordKind.Cursor) break;
    records.push({
      kind,
      seq: Number(data.readBigUInt64BE(off + 9)),
      time: Number(data.readBigUInt64BE(off + 17)),
      body: data.subarray(off + RECORD_HEADER, off + size),
      offset: off,
      size,
    });
    off += size;
  }
  return { records, end: off };
}

const SEGMENT_RE = /^seg-(\d{12})\.log$/;

/** The file name of segment number `index`. */
export function segmentName(index: number): string {
  return `seg-${String(index).padStart(12, "0")}.log`;
}

/** The segment number of a file name, or undefined for any other file. */
export function segmentIndex(name: string): number | undefined {
  const m = SEGMENT_RE.exec(name);
  return m ? Number(m[1]) : undefined;
}
