import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { agentv1 } from "@flotilla/protocol";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { decodeLogRecords, decodeMetricSamples } from "./wire.ts";

const RUNS = 200;

const u64 = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
const i64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const text = fc.string({ unit: "binary", maxLength: 40 });
// Attribute keys as ingest allows them (a "__proto__" key is kept apart: see below).
const key = fc.stringMatching(/^[a-z][a-z0-9_.]{0,10}$/);

const logRecord = fc.record({ seq: u64, timeUnixMs: i64, unit: text, source: text, line: text });
const metricPoint = fc.record({
  name: text,
  value: fc.double(),
  attributes: fc.dictionary(key, text, { maxKeys: 4 }),
  unit: text,
  monotonic: fc.boolean(),
});
const metricSample = fc.record({ seq: u64, timeUnixMs: i64, points: fc.array(metricPoint, { maxLength: 5 }) });

/** Unknown fields (numbers 6 and up) of every wire type, appended to a message's bytes. */
const unknownFields = fc.array(
  fc.tuple(fc.integer({ min: 6, max: 1000 }), fc.constantFrom(WireType.Varint, WireType.Bit64, WireType.LengthDelimited, WireType.Bit32), fc.uint8Array({ maxLength: 8 })),
  { maxLength: 3 },
);
function withUnknown(bytes: Uint8Array, extra: [number, WireType, Uint8Array][]): Uint8Array {
  const w = new BinaryWriter();
  w.raw(bytes);
  for (const [no, wire, data] of extra) {
    w.tag(no, wire);
    if (wire === WireType.Varint) w.uint32(data.length);
    else if (wire === WireType.Bit64) w.fixed64(BigInt(data.length));
    else if (wire === WireType.Bit32) w.fixed32(data.length);
    else w.bytes(data);
  }
  return w.finish();
}

const plain = <T>(v: T): T => JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? `${x}n` : x))) as T;

describe("telemetry wire decoders", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("decode every LogRecords payload exactly as fromBinary does, unknown fields skipped", () => {
    fc.assert(
      fc.property(fc.array(logRecord, { maxLength: 20 }), unknownFields, (records, extra) => {
        const bytes = withUnknown(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records })), extra);
        const want = fromBinary(agentv1.LogRecordsSchema, bytes).records.map(({ seq, timeUnixMs, unit, source, line }) => ({ seq, timeUnixMs, unit, source, line }));
        expect(decodeLogRecords(bytes)).toEqual(want);
      }),
      propertyRuns(RUNS),
    );
  });

  it("decode every MetricSamples payload exactly as fromBinary does", () => {
    fc.assert(
      fc.property(fc.array(metricSample, { maxLength: 8 }), unknownFields, (samples, extra) => {
        const bytes = withUnknown(toBinary(agentv1.MetricSamplesSchema, create(agentv1.MetricSamplesSchema, { samples })), extra);
        const want = fromBinary(agentv1.MetricSamplesSchema, bytes).samples.map((s) => ({
          seq: s.seq,
          timeUnixMs: s.timeUnixMs,
          points: s.points.map(({ name, value, attributes, unit, monotonic }) => ({ name, value, attributes, unit, monotonic })),
        }));
        expect(plain(decodeMetricSamples(bytes))).toEqual(plain(want));
      }),
      propertyRuns(RUNS),
    );
  });

  it("accept no malformed payload that fromBinary would read differently", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        let ours: unknown;
        try {
          ours = decodeLogRecords(bytes);
        } catch {
          return; // refused: the batch is answered InvalidArgument and nothing is stored
        }
        const theirs = fromBinary(agentv1.LogRecordsSchema, bytes).records.map(({ seq, timeUnixMs, unit, source, line }) => ({ seq, timeUnixMs, unit, source, line }));
        expect(ours).toEqual(theirs);
      }),
      propertyRuns(RUNS * 5),
    );
  });

  it("refuses truncated payloads and strings that are not UTF-8", () => {
    const bytes = toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records: [{ seq: 1n, line: "hello" }] }));
    expect(() => decodeLogRecords(bytes.subarray(0, bytes.length - 1))).toThrow();
    const bad = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(new BinaryWriter().tag(5, WireType.LengthDelimited).bytes(new Uint8Array([0xff, 0xfe])).finish()).finish();
    expect(() => decodeLogRecords(bad)).toThrow();
    expect(() => fromBinary(agentv1.LogRecordsSchema, bad)).toThrow();
  });

  it("keeps an attribute named __proto__ as an attribute, for ingest's key check to refuse", () => {
    const p = create(agentv1.MetricPointSchema, { name: "x", value: 1 });
    const entry = new BinaryWriter().tag(1, WireType.LengthDelimited).string("__proto__").tag(2, WireType.LengthDelimited).string("v").finish();
    const point = new BinaryWriter().raw(toBinary(agentv1.MetricPointSchema, p)).tag(3, WireType.LengthDelimited).bytes(entry).finish();
    const sample = new BinaryWriter().tag(1, WireType.Varint).uint64(1n).tag(3, WireType.LengthDelimited).bytes(point).finish();
    const bytes = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(sample).finish();
    const [s] = decodeMetricSamples(bytes);
    expect(Object.keys(s!.points[0]!.attributes)).toEqual(["__proto__"]);
    expect(Object.getPrototypeOf(s!.points[0]!.attributes)).toBeNull();
  });
});
