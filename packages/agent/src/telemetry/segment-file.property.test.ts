import { readdir, readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { SegmentBuffer } from "./segment-buffer.ts";
import { encodeRecord, MAX_BODY, parseRecords, RecordKind, RECORD_HEADER } from "./segment-file.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);
const FILE_RUNS = 40;
const fileRuns = propertyRuns(FILE_RUNS);
const dir = useTempDir("flotilla-segment-prop-");

const record = fc.record({
  kind: fc.constantFrom(RecordKind.Data, RecordKind.Cursor),
  seq: fc.maxSafeInteger().map((n) => Math.abs(n)),
  time: fc.integer({ min: 0, max: 2 ** 45 }),
  body: fc.uint8Array({ maxLength: 64 }),
});
const records = fc.array(record, { maxLength: 12 });

function encodeAll(rs: fc.Arbitrary<typeof record extends fc.Arbitrary<infer R> ? R : never>[] | { kind: RecordKind; seq: number; time: number; body: Uint8Array }[]): { data: Buffer; ends: number[] } {
  const bufs = (rs as { kind: RecordKind; seq: number; time: number; body: Uint8Array }[]).map((r) => encodeRecord(r.kind, r.seq, r.time, r.body));
  const ends: number[] = [];
  let n = 0;
  for (const b of bufs) ends.push((n += b.length));
  return { data: Buffer.concat(bufs), ends };
}

/** Checks what parseRecords returned against the records the file was written with. */
function expectPrefixOf(parsed: ReturnType<typeof parseRecords>, written: { kind: RecordKind; seq: number; time: number; body: Uint8Array }[], count: number): void {
  expect(parsed.records.length).toBe(count);
  parsed.records.forEach((r, i) => {
    const w = written[i]!;
    expect({ kind: r.kind, seq: r.seq, time: r.time, body: new Uint8Array(r.body) }).toEqual({ kind: w.kind, seq: w.seq, time: w.time, body: w.body });
  });
}

describe("segment file reader properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("reads back every record written, and exactly the whole ones of a file cut anywhere", () => {
    fc.assert(
      fc.property(records, fc.nat(), (rs, cutAt) => {
        const { data, ends } = encodeAll(rs);
        const full = parseRecords(data);
        expectPrefixOf(full, rs, rs.length);
        expect(full.end).toBe(data.length);
        const cut = cutAt % (data.length + 1);
        const torn = parseRecords(data.subarray(0, cut));
        const whole = ends.filter((e) => e <= cut).length;
        expectPrefixOf(torn, rs, whole);
        expect(torn.end).toBe(whole === 0 ? 0 : ends[whole - 1]);
      }),
      runs,
    );
  });

  it("stops at a damaged byte: the records before it come back intact, none after it", () => {
    fc.assert(
      fc.property(records.filter((rs) => rs.length > 0), fc.nat(), fc.integer({ min: 1, max: 255 }), (rs, at, xor) => {
        const { data, ends } = encodeAll(rs);
        const damaged = Buffer.from(data);
        const i = at % data.length;
        damaged[i]! ^= xor;
        const parsed = parseRecords(damaged);
        const before = ends.filter((e) => e <= i).length;
        expectPrefixOf(parsed, rs, before);
        expect(parsed.end).toBe(before === 0 ? 0 : ends[before - 1]);
      }),
      runs,
    );
  });

  it("never throws or loops on arbitrary bytes, and what it returns tiles the start of the data", () => {
    const header = fc.tuple(fc.constantFrom(0, RECORD_HEADER - 8 - 1, RECORD_HEADER - 8, MAX_BODY + 17, MAX_BODY + 18, 0xffffffff), fc.uint8Array({ maxLength: 60 })).map(([len, rest]) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(len);
      return Buffer.concat([b, rest]);
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), header), fc.nat({ max: 250 }), (data, from) => {
        const parsed = parseRecords(data, Math.min(from, data.length));
        let off = Math.min(from, data.length);
        for (const r of parsed.records) {
          expect(r.offset).toBe(off);
          expect(r.size).toBeGreaterThanOrEqual(RECORD_HEADER);
          off += r.size;
        }
        expect(parsed.end).toBe(off);
        expect(parsed.end).toBeLessThanOrEqual(data.length);
      }),
      runs,
    );
  });
});

describe("segment buffer recovery properties", () => {
  it(
    "reopens a buffer whose files were cut or damaged anywhere: records before the damage come back in order, no seq twice",
    async () => {
      let round = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 40 }),
          fc.nat(),
          fc.nat(),
          fc.constantFrom("cut", "flip", "garbage-tail", "state"),
          async (bodies, pick, at, damage) => {
            const path = join(dir.path, `b${round++}`);
            const opts = { maxBytes: 1 << 20, segmentBytes: 4096, fsyncIntervalMs: 0 };
            const b = await SegmentBuffer.open(path, opts);
            await b.append(bodies.map((body, i) => ({ time: 1000 + i, body })));
            await b.close();
            const segs = (await readdir(path)).filter((f) => f.startsWith("seg-")).sort();
            const seqsIn = await Promise.all(segs.map(async (f) => parseRecords(await readFile(join(path, f))).records.filter((r) => r.kind === RecordKind.Data).map((r) => r.seq)));
            const v = pick % segs.length;
            const victim = join(path, segs[v]!);
            const bytes = await readFile(victim);
            const offset = bytes.length === 0 ? 0 : at % bytes.length;
            if (damage === "cut") await truncate(victim, offset);
            else if (damage === "flip") await writeFile(victim, Buffer.from(bytes.map((x, i) => (i === offset ? x ^ 0x5a : x))));
            else if (damage === "garbage-tail") await writeFile(victim, Buffer.concat([bytes, Buffer.from("\u0000\u0000\u0001torn")]));
            else await writeFile(join(path, "state.json"), ["", "{", "null", "[]", '{"acked":1e400,"droppedThrough":-3,"cursors":7}'][at % 5]!);

            const reopened = await SegmentBuffer.open(path, opts);
            try {
              const got = await reopened.read(0, 1000, 1 << 24);
              const seqs = got.map((r) => r.seq);
              expect(new Set(seqs).size).toBe(seqs.length);
              expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
              for (const r of got) expect(Buffer.from(r.body)).toEqual(Buffer.from(bodies[r.seq - 1]!));
              // Every record of the segments before the damaged one, or of all when only state.json was hit, is still there.
              const intact = damage === "state" ? seqsIn.flat() : seqsIn.slice(0, v).flat();
              for (const s of intact) expect(seqs).toContain(s);
              // New records continue after every seq handed out before.
              const next = await reopened.append([{ time: 1, body: Buffer.from("next") }]);
              expect(next).toBeGreaterThan(Math.max(0, ...seqs));
              if (damage !== "state") expect(next).toBeGreaterThan(Math.max(0, ...intact));
            } finally {
              await reopened.close();
            }
          },
        ),
        // Found by this property: a damaged state.json (here empty) stopped the buffer, and the agent, from opening.
        { ...fileRuns, examples: [[[Uint8Array.from([0])], 0, 0, "state"], [[Uint8Array.from([0])], 0, 4, "state"]] },
      );
    },
    propertyTimeout(60_000, FILE_RUNS),
  );
});
