/**
 * Decoders for the two messages a fleet sends most: the payloads of `ShipLogs` (LogRecords) and
 * `ShipMetrics` (MetricSamples). They read the protobuf wire format straight into the plain
 * objects ingest needs. `fromBinary` builds each record through protobuf-es's reflection (a
 * wrapper and a Map per message, per list element and per map entry): on a coordinator with
 * thousands of devices that was the largest source of garbage, and decoding was about a sixth of
 * a log batch's cost. The result equals `fromBinary`'s for every payload it accepts (a property
 * test holds them together); unknown fields are skipped, strings must be valid UTF-8 (proto3), and
 * anything else malformed throws.
 */
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";

export interface WireLogRecord {
  seq: bigint;
  timeUnixMs: bigint;
  unit: string;
  source: string;
  line: string;
}

export interface WireMetricPoint {
  name: string;
  value: number;
  attributes: Record<string, string>;
  unit: string;
  monotonic: boolean;
}

export interface WireMetricSample {
  seq: bigint;
  timeUnixMs: bigint;
  points: WireMetricPoint[];
}

/** The fields of a message that occupies reader[pos, end), one callback per field. */
function fields(r: BinaryReader, end: number, each: (field: number, wire: WireType) => boolean): void {
  while (r.pos < end) {
    const [field, wire] = r.tag();
    if (!each(field, wire)) r.skip(wire, field);
  }
  if (r.pos !== end) throw new Error("a field runs past the end of its message");
}

/** The end of the length-delimited field the reader is at (after its tag). */
function nested(r: BinaryReader, wire: WireType): number {
  if (wire !== WireType.LengthDelimited) throw new Error("a message field is not length-delimited");
  const len = r.uint32();
  const end = r.pos + len;
  if (end > r.len) throw new Error("a message field runs past the end of the payload");
  return end;
}

function expect(wire: WireType, want: WireType): void {
  if (wire !== want) throw new Error("a field has the wrong wire type");
}

const big = (v: bigint | string): bigint => (typeof v === "bigint" ? v : BigInt(v));

/** Fields 1 (seq) and 2 (time_unix_ms), which a log record and a metric sample share. */
function seqOrTime(r: BinaryReader, field: number, wire: WireType, into: { seq: bigint; timeUnixMs: bigint }): boolean {
  if (field !== 1 && field !== 2) return false;
  expect(wire, WireType.Varint);
  if (field === 1) into.seq = big(r.uint64());
  else into.timeUnixMs = big(r.int64());
  return true;
}

/** A string field (proto3: valid UTF-8). */
function str(r: BinaryReader, wire: WireType): string {
  expect(wire, WireType.LengthDelimited);
  return r.string(true);
}

/**
 * The messages of a payload's repeated field 1 (the one field of LogRecords and MetricSamples):
 * each starts as `empty()` and `field` reads its fields into it (false: unknown, skipped).
 */
function repeated<T>(bytes: Uint8Array, empty: () => T, field: (r: BinaryReader, f: number, w: WireType, item: T) => boolean): T[] {
  const r = new BinaryReader(bytes);
  const out: T[] = [];
  fields(r, r.len, (f, w) => {
    if (f !== 1) return false;
    const item = empty();
    fields(r, nested(r, w), (ff, ww) => field(r, ff, ww, item));
    out.push(item);
    return true;
  });
  return out;
}

/** LogRecords.records. */
export function decodeLogRecords(bytes: Uint8Array): WireLogRecord[] {
  return repeated<WireLogRecord>(
    bytes,
    () => ({ seq: 0n, timeUnixMs: 0n, unit: "", source: "", line: "" }),
    (r, f, w, rec) => {
      switch (f) {
        case 3:
          rec.unit = str(r, w);
          return true;
        case 4:
          rec.source = str(r, w);
          return true;
        case 5:
          rec.line = str(r, w);
          return true;
        default:
          return seqOrTime(r, f, w, rec);
      }
    },
  );
}

/** MetricSamples.samples, each with its points and their attributes. */
export function decodeMetricSamples(bytes: Uint8Array): WireMetricSample[] {
  return repeated<WireMetricSample>(
    bytes,
    () => ({ seq: 0n, timeUnixMs: 0n, points: [] }),
    (r, f, w, sample) => {
      if (f !== 3) return seqOrTime(r, f, w, sample);
      sample.points.push(point(r, nested(r, w)));
      return true;
    },
  );
}

function point(r: BinaryReader, end: number): WireMetricPoint {
  // No prototype: a key such as "__proto__" is an attribute like any other (and refused by
  // ingest's key check), not a way to change the object.
  const p: WireMetricPoint = { name: "", value: 0, attributes: Object.create(null) as Record<string, string>, unit: "", monotonic: false };
  fields(r, end, (f, w) => {
    switch (f) {
      case 1:
        p.name = str(r, w);
        return true;
      case 2:
        expect(w, WireType.Bit64);
        p.value = r.double();
        return true;
      case 3: {
        // A map entry: key (1) and value (2), either may be missing (then empty); a later entry
        // with the same key wins.
        const entryEnd = nested(r, w);
        let key = "";
        let value = "";
        fields(r, entryEnd, (ef, ew) => {
          if (ef === 1) key = str(r, ew);
          else if (ef === 2) value = str(r, ew);
          else return false;
          return true;
        });
        p.attributes[key] = value;
        return true;
      }
      case 4:
        p.unit = str(r, w);
        return true;
      case 5:
        expect(w, WireType.Varint);
        p.monotonic = r.bool();
        return true;
      default:
        return false;
    }
  });
  return p;
}
