import { appendFile, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { SegmentBuffer } from "./segment-buffer.ts";

const dir = useTempDir("flotilla-segbuf-");

const body = (i: number, size = 20) => Buffer.from(`line ${i} `.padEnd(size, "x"));
const items = (from: number, n: number, size?: number) => Array.from({ length: n }, (_, k) => ({ time: 1000 + from + k, body: body(from + k, size) }));
const text = (b: Uint8Array) => Buffer.from(b).toString().split(" ").slice(0, 2).join(" ");

async function diskBytes(): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir.path)) if (f.startsWith("seg-")) n += (await stat(join(dir.path, f))).size;
  return n;
}

describe("SegmentBuffer", () => {
  it("hands out growing seqs and reads records back in order across segments", async () => {
    const b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 4096 });
    expect(await b.append(items(1, 500))).toBe(500);
    const got = await b.read(0, 1000, 1 << 20);
    expect(got.map((r) => r.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
    expect(text(got[499]!.body)).toBe("line 500");
    expect((await readdir(dir.path)).filter((f) => f.startsWith("seg-")).length).toBeGreaterThan(2);
    const page = await b.read(100, 10, 1 << 20);
    expect(page.map((r) => r.seq)).toEqual([101, 102, 103, 104, 105, 106, 107, 108, 109, 110]);
    await b.close();
  });

  it("deletes acknowledged segments and never reuses a seq, also after everything was acknowledged and a restart", async () => {
    let b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 4096 });
    await b.append(items(1, 300));
    await b.ack(300);
    await b.append(items(301, 1));
    expect(await diskBytes()).toBeLessThan(4096);
    await b.ack(301);
    await b.close();
    b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 4096 });
    expect(await b.append(items(302, 1))).toBe(302);
    expect((await b.read(b.acked, 10, 1 << 20)).map((r) => r.seq)).toEqual([302]);
    await b.close();
  });

  it("keeps unacknowledged records and cursors across a restart, and cuts off a torn tail", async () => {
    let b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 1 << 16 });
    await b.append(items(1, 10), { "file:app": "42" });
    await b.ack(4);
    await b.close();
    const seg = (await readdir(dir.path)).filter((f) => f.startsWith("seg-")).sort().at(-1)!;
    await appendFile(join(dir.path, seg), Buffer.from([0, 0, 0, 40, 1, 2, 3])); // a write cut short by a power loss
    b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 1 << 16 });
    expect(b.corrupted).toBe(1);
    expect(b.cursor("file:app")).toBe("42");
    expect((await b.read(b.acked, 100, 1 << 20)).map((r) => r.seq)).toEqual([5, 6, 7, 8, 9, 10]);
    expect(await b.append(items(11, 1))).toBe(11);
    expect((await b.read(10, 100, 1 << 20)).map((r) => text(r.body))).toEqual(["line 11"]);
    await b.close();
  });

  it("holds its size bound by dropping the oldest records, and counts exactly what it dropped", async () => {
    const maxBytes = 64 * 1024;
    const b = await SegmentBuffer.open(dir.path, { maxBytes, segmentBytes: 4096 });
    const total = 5000;
    for (let i = 1; i <= total; i += 50) {
      await b.append(items(i, 50, 60));
      expect(await diskBytes()).toBeLessThanOrEqual(maxBytes);
    }
    await b.ack(0);
    const left = await b.read(0, total, 1 << 30);
    const { droppedThrough, droppedTotal } = b.drops();
    expect(droppedTotal).toBeGreaterThan(0);
    expect(droppedTotal + left.length).toBe(total);
    expect(droppedThrough).toBe(droppedTotal);
    expect(left[0]!.seq).toBe(droppedThrough + 1);
    expect(left.at(-1)!.seq).toBe(total);
    await b.close();
  });

  it("does not count acknowledged records it deletes as dropped", async () => {
    const b = await SegmentBuffer.open(dir.path, { maxBytes: 32 * 1024, segmentBytes: 4096 });
    await b.append(items(1, 200, 60));
    await b.ack(200);
    for (let i = 201; i <= 1200; i += 50) await b.append(items(i, 50, 60));
    const left = await b.read(200, 10_000, 1 << 30);
    expect(b.drops().droppedTotal + left.length).toBe(1000);
    await b.close();
  });

  it("does not count records that were out with a batch as dropped when that batch is acknowledged after their segment was dropped", async () => {
    const b = await SegmentBuffer.open(dir.path, { maxBytes: 32 * 1024, segmentBytes: 4096 });
    await b.append(items(1, 100, 60));
    const batch = await b.read(0, 100, 1 << 30);
    expect(batch.at(-1)!.seq).toBe(100);
    // While the batch is out, the source writes enough to push its segments off the disk.
    for (let i = 101; i <= 1100; i += 50) await b.append(items(i, 50, 60));
    expect(b.drops().droppedThrough).toBeGreaterThan(100);
    await b.ack(100); // the coordinator stored the batch
    const left = await b.read(b.acked, 10_000, 1 << 30);
    const { droppedThrough, droppedTotal } = b.drops();
    expect(left[0]!.seq).toBe(droppedThrough + 1);
    // Every seq is delivered once or counted as dropped, never both.
    expect(batch.length + droppedTotal + left.length).toBe(1100);
    await b.close();
  });

  it("leaves records that were out with an unanswered batch unsettled (after a read again, and across a restart) until an answer says how many the coordinator holds", async () => {
    for (const retry of ["read", "restart"] as const) {
      for (const held of [0, 40, 100, undefined]) {
        const at = join(dir.path, `${retry}-${held}`);
        let b = await SegmentBuffer.open(at, { maxBytes: 32 * 1024, segmentBytes: 4096 });
        await b.append(items(1, 100, 60));
        expect(await b.read(0, 100, 1 << 30)).toHaveLength(100);
        for (let i = 101; i <= 1100; i += 50) await b.append(items(i, 50, 60));
        if (retry === "restart") {
          await b.close();
          b = await SegmentBuffer.open(at, { maxBytes: 32 * 1024, segmentBytes: 4096 });
        }
        // No answer came: the shipper reads again from the acknowledged seq. Seqs 1..100 are
        // gone from disk, and whether the coordinator holds them only it can say.
        const left = await b.read(b.acked, 10_000, 1 << 30);
        const before = b.drops();
        expect(before.unsettled).toEqual([{ from: 1, to: 100 }]);
        expect(before.droppedTotal + 100 + left.length).toBe(1100);
        expect(left.at(-1)!.seq).toBe(1100);
        // The next batch's answer says how many of them it holds (undefined: an older coordinator
        // that does not say, so none count as held); the others count as dropped.
        await b.ack(left.at(-1)!.seq, { ranges: before.unsettled!, held });
        const after = b.drops();
        expect(after.unsettled).toBeUndefined();
        expect(after.droppedTotal).toBe(before.droppedTotal + 100 - (held ?? 0));
        await b.close();
        // Settled for good: a restart neither brings the range back nor counts it again.
        b = await SegmentBuffer.open(at, { maxBytes: 32 * 1024, segmentBytes: 4096 });
        expect(b.drops()).toEqual(after);
        await b.close();
      }
    }
  });

  it("keeps at most 16 unsettled ranges, counting the oldest beyond them as dropped", async () => {
    const b = await SegmentBuffer.open(dir.path, { maxBytes: 16 * 1024, segmentBytes: 4096 });
    let next = 1;
    const append = async (n: number) => {
      await b.append(items(next, n, 60));
      next += n;
    };
    for (let round = 0; round < 20; round++) {
      await append(10);
      const batch = await b.read(b.acked, 10, 1 << 30);
      expect(batch).toHaveLength(10);
      // The batch goes unanswered while enough is written to drop it from disk.
      for (let i = 0; i < 10; i++) await append(50);
      await b.read(b.acked, 0, 0);
    }
    const d = b.drops();
    expect(d.unsettled).toHaveLength(16);
    const unsettled = d.unsettled!.reduce((n, r) => n + r.to - r.from + 1, 0);
    const left = await b.read(b.acked, 100_000, 1 << 30);
    expect(d.droppedTotal + unsettled + left.length).toBe(next - 1);
    await b.close();
  });

  it("counts records before damage in an older segment as dropped, so shipping is never stuck behind a hole", async () => {
    let b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 4096 });
    await b.append(items(1, 400));
    await b.close();
    const segs = (await readdir(dir.path)).filter((f) => f.startsWith("seg-")).sort();
    expect(segs.length).toBeGreaterThan(3);
    const victim = join(dir.path, segs[1]!);
    const data = await readFile(victim);
    data[Math.floor(data.length / 2)]! ^= 0xff;
    await writeFile(victim, data);
    b = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20, segmentBytes: 4096 });
    const left = await b.read(0, 1000, 1 << 30);
    const { droppedThrough, droppedTotal } = b.drops();
    expect(left[0]!.seq).toBe(droppedThrough + 1);
    expect(left.map((r) => r.seq)).toEqual(Array.from({ length: left.length }, (_, i) => droppedThrough + 1 + i));
    expect(left.at(-1)!.seq).toBe(400);
    expect(droppedTotal).toBe(droppedThrough);
    await b.close();
  });
});
