import { readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { Outbox } from "./outbox.ts";

const RUNS = 40;
const runs = propertyRuns(RUNS);
const tmp = useTempDir("flotilla-outbox-prop-");

const stream = fc.constantFrom("facts", "progress", "logs");
/**
 * What happens to the agent: appends, a delivery of pending records that the coordinator then
 * acknowledges (up to some seq of one stream), and crashes at any point of an append or an ack.
 */
const event = fc.oneof(
  { weight: 4, arbitrary: fc.record({ t: fc.constant("append" as const), stream, body: fc.uint8Array({ maxLength: 16 }) }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("deliver" as const), limit: fc.integer({ min: 1, max: 6 }), stream, upTo: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("crash-idle" as const) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("crash-in-append" as const), stream, bytes: fc.uint8Array({ maxLength: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("crash-in-ack" as const), stream, upTo: fc.nat(), keep: fc.array(fc.boolean(), { maxLength: 8 }), beforeCounter: fc.boolean() }) },
);

interface Sent {
  stream: string;
  seq: number;
  body: string;
}

describe("outbox replay properties", () => {
  it(
    "delivers every record appended and not acknowledged, in append order, across crashes at any point; seqs never go back",
    async () => {
      let round = 0;
      await fc.assert(
        fc.asyncProperty(fc.array(event, { minLength: 1, maxLength: 25 }), async (events) => {
          const dir = join(tmp.path, `o${round++}`);
          let box = await Outbox.open(dir);
          const appended: Sent[] = [];
          const acked = new Map<string, number>();
          const highest = new Map<string, number>();
          const key = (r: { stream: string; seq: number }) => `${r.stream}:${r.seq}`;

          /** Reads everything pending and checks it against what was appended and acknowledged. */
          const check = async () => {
            const pending = (await box.pending(10_000)).map((r) => ({ stream: r.stream, seq: r.seq, body: Buffer.from(r.body).toString("hex") }));
            const keys = pending.map(key);
            expect(new Set(keys).size).toBe(keys.length);
            // In append order: a subsequence of what was appended, bodies intact.
            let i = 0;
            for (const p of pending) {
              while (i < appended.length && key(appended[i]!) !== key(p)) i++;
              expect(i).toBeLessThan(appended.length);
              expect(p.body).toBe(appended[i]!.body);
            }
            // At least once: nothing unacknowledged is missing.
            for (const a of appended) if (a.seq > (acked.get(a.stream) ?? 0)) expect(keys).toContain(key(a));
            return pending;
          };

          try {
            for (const e of events) {
              if (e.t === "append") {
                const r = await box.append(e.stream, e.body);
                expect(r.seq).toBeGreaterThan(Math.max(highest.get(e.stream) ?? 0, acked.get(e.stream) ?? 0));
                highest.set(e.stream, r.seq);
                appended.push({ stream: e.stream, seq: r.seq, body: Buffer.from(e.body).toString("hex") });
              } else if (e.t === "deliver") {
                const pending = (await check()).slice(0, e.limit).filter((p) => p.stream === e.stream);
                if (pending.length === 0) continue;
                // The coordinator acknowledges a prefix of what it received of one stream.
                const seq = pending[e.upTo % pending.length]!.seq;
                await box.ack(e.stream, seq);
                acked.set(e.stream, Math.max(acked.get(e.stream) ?? 0, seq));
              } else {
                if (e.t === "crash-in-ack") {
                  const before = new Map<string, Buffer>();
                  for (const f of await readdir(dir)) before.set(f, await readFile(join(dir, f)));
                  const mine = appended.filter((a) => a.stream === e.stream && a.seq > (acked.get(e.stream) ?? 0));
                  if (mine.length > 0) {
                    const seq = mine[e.upTo % mine.length]!.seq;
                    await box.ack(e.stream, seq);
                    // The crash came after some of the ack's work: the counter may or may not be
                    // on disk, and any of the acknowledged records may still be there.
                    await box.close();
                    const after = new Set(await readdir(dir));
                    let k = 0;
                    for (const [f, data] of before) {
                      if (after.has(f)) continue;
                      if (e.keep[k++ % Math.max(1, e.keep.length)] ?? true) await writeFile(join(dir, f), data);
                    }
                    if (e.beforeCounter) {
                      const counter = `${e.stream}.seq`;
                      if (before.has(counter)) await writeFile(join(dir, counter), before.get(counter)!);
                      else await rm(join(dir, counter), { force: true });
                      // Before the counter was written nothing was deleted yet.
                      for (const [f, data] of before) await writeFile(join(dir, f), data);
                    } else {
                      acked.set(e.stream, Math.max(acked.get(e.stream) ?? 0, seq));
                    }
                  }
                }
                await box.close();
                if (e.t === "crash-in-append") {
                  // The next append died while writing its temporary file: it never resolved.
                  const seq = (highest.get(e.stream) ?? 0) + 1;
                  await writeFile(join(dir, `${e.stream}-${String(seq).padStart(20, "0")}.rec.tmp`), e.bytes);
                }
                box = await Outbox.open(dir);
                expect(box.corrupted).toBe(0);
              }
              await check();
            }
            expect((await readdir(dir)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
          } finally {
            await box.close();
          }
        }),
        runs,
      );
    },
    propertyTimeout(60_000, RUNS),
  );
});
