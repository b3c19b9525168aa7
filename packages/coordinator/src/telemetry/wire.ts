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

/** LogRecords.records (field 1). */
export function decodeLogRecords(bytes: Uint8Array): WireLogRecord[] {
  const r = new BinaryReader(bytes);
  const out: WireLogRecord[] = [];
  fields(r, r.len, (field, wire) => {
    if (field !== 1) return false;
    const end = nested(r, wire);
    const rec: WireLogRecord = { seq: 0n, timeUnixMs: 0n, unit: "", source: "", line: "" };
    fields(r, end, (f, w) => {
      switch (f) {
        case 1:
          expect(w, WireType.Varint);
          rec.seq = big(r.uint64());
          return true;
        case 2:
          expect(w, WireType.Varint);
          rec.timeUnixMs = big(r.int64());
          return true;
        case 3:
          expect(w, WireType.LengthDelimited);
          rec.unit = r.string(true);
          return true;
        case 4:
          expect(w, WireType.LengthDelimited);
          rec.source = r.string(true);
          return true;
        case 5:
          expect(w, WireType.LengthDelimited);
          rec.line = r.string(true);
          return true;
        default:
          return false;
      }
    });
    out.push(rec);
    return true;
  });
  return out;
}

/** MetricSamples.samples (field 1), each with its points and their attributes. */
export function decodeMetricSamples(bytes: Uint8Array): WireMetricSample[] {
  const r = new BinaryReader(bytes);
  const out: WireMetricSample[] = [];
  fields(r, r.len, (field, wire) => {
    if (field !== 1) return false;
    const end = nested(r, wire);
    const sample: WireMetricSample = { seq: 0n, timeUnixMs: 0n, points: [] };
    fields(r, end, (f, w) => {
      switch (f) {
        case 1:
          expect(w, WireType.Varint);
          sample.seq = big(r.uint64());
          return true;
        case 2:
          expect(w, WireType.Varint);
          sample.timeUnixMs = big(r.int64());
          return true;
        case 3:
          sample.points.push(point(r, nested(r, w)));
          return true;
        default:
          return false;
      }
    });
    out.push(sample);
    return true;
  });
  return out;
}

function point(r: BinaryReader, end: number): WireMetricPoint {
  // No prototype: a key such as "__proto__" is an attribute like any other (and refused by
  // ingest's key check), not a way to change the object.
  const p: WireMetricPoint = { name: "", value: 0, attributes: Object.create(null) as Record<string, string>, unit: "", monotonic: false };
  fields(r, end, (f, w) => {
    switch (f) {
      case 1:
        expect(w, WireType.LengthDelimited);
        p.name = r.string(true);
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
          if (ef === 1) {
            expect(ew, WireType.LengthDelimited);
            key = r.string(true);
            return true;
          }
          if (ef === 2) {
            expect(ew, WireType.LengthDelimited);
            value = r.string(true);
            return true;
          }
          return false;
        });
        p.attributes[key] = value;
        return true;
      }
      case 4:
        expect(w, WireType.LengthDelimited);
        p.unit = r.string(true);
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
