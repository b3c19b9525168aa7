import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { SegmentBuffer, type DropStats } from "./segment-buffer.ts";
import { Shipper, type SendBatch } from "./shipper.ts";

const dir = useTempDir("flotilla-shipper-");

const record = (time: number) => ({ time, body: Buffer.from(`sample at ${time}`) });

/**
 * A shipper over a fresh buffer whose coordinator acknowledges everything, holds `held` of any
 * unsettled seqs, and remembers each batch's seqs and drop report.
 */
async function setup(opts: { batchRecords: number; lingerMs: number; held?: number }) {
  const buffer = await SegmentBuffer.open(dir.path, { maxBytes: 1 << 20 });
  const batches: number[][] = [];
  const reports: DropStats[] = [];
  const send: SendBatch = async (records, drops) => {
    batches.push(records.map((r) => r.seq));
    reports.push(drops);
    const acked = Math.max(records.at(-1)?.seq ?? 0, drops.droppedThrough);
    return drops.unsettled ? { acked, unsettledHeld: opts.held ?? 0 } : { acked };
  };
  const shipper = new Shipper(buffer, "metrics", { batchRecords: opts.batchRecords, batchBytes: 1 << 20, backoffMinMs: 10, backoffMaxMs: 100, lingerMs: opts.lingerMs }, silentLogger);
  const stop = new AbortController();
  shipper.connect(send);
  const running = shipper.run(stop.signal);
  cleanups.push(async () => {
    stop.abort();
    await running;
    shipper.close();
    await buffer.close();
  });
  return { buffer, batches, reports };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

describe("Shipper with a linger", () => {
  it("holds a fresh batch that is not full, so records appended meanwhile go in the same call", async () => {
    const { buffer, batches } = await setup({ batchRecords: 3, lingerMs: 60_000 });
    await buffer.append([record(Date.now())]);
    await buffer.append([record(Date.now())]);
    await buffer.append([record(Date.now())]); // the batch is full now: it goes without waiting out the minute
    await waitFor("a batch shipped", () => batches.length > 0, 5000);
    expect(batches).toEqual([[1, 2, 3]]);
  });

  it("ships at once records older than the linger (buffered while offline or before a restart)", async () => {
    const { buffer, batches } = await setup({ batchRecords: 100, lingerMs: 60_000 });
    await buffer.append([record(Date.now() - 61_000), record(Date.now() - 60_500)]);
    await waitFor("a batch shipped", () => batches.length > 0, 5000);
    expect(batches).toEqual([[1, 2]]);
  });

  it("waits at most the linger when a record's time lies in the future (the clock was set back)", async () => {
    const { buffer, batches } = await setup({ batchRecords: 100, lingerMs: 200 });
    await buffer.append([record(Date.now() + 3_600_000)]);
    await waitFor("a batch shipped", () => batches.length > 0, 5000);
    expect(batches).toEqual([[1]]);
  });

  it("without a linger, ships each record as soon as it is appended", async () => {
    const { buffer, batches } = await setup({ batchRecords: 3, lingerMs: 0 });
    await buffer.append([record(Date.now())]);
    await waitFor("the first record shipped", () => batches.length === 1, 5000);
    await buffer.append([record(Date.now())]);
    await waitFor("the second record shipped", () => batches.length === 2, 5000);
    expect(batches).toEqual([[1], [2]]);
  });
});

describe("Shipper and unsettled seqs", () => {
  it("asks the coordinator about unsettled seqs with a batch of none when nothing else waits, and counts what it does not hold", async () => {
    // The agent stopped while seqs 4..8 were out, after dropping them from disk: they come back unsettled.
    await writeFile(join(dir.path, "state.json"), JSON.stringify({ acked: 3, droppedThrough: 8, droppedTotal: 0, cursors: {}, unsettled: [{ from: 4, to: 8 }] }));
    const { buffer, batches, reports } = await setup({ batchRecords: 100, lingerMs: 0, held: 2 });
    await waitFor("the unsettled seqs settled", () => buffer.drops().unsettled === undefined, 5000);
    expect(batches).toEqual([[]]);
    expect(reports[0]!.unsettled).toEqual([{ from: 4, to: 8 }]);
    expect(buffer.drops().droppedTotal).toBe(3);
  });
});
