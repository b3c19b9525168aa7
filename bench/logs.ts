/**
 * Log ingestion: lines per second the coordinator stores through ShipLogs (gzip batches of
 * 1000 lines, one batch in flight, SQLite), beside the same rows inserted directly into the
 * same table with better-sqlite3 in one transaction per batch.
 */
import { gzipSync } from "node:zlib";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import SQLite from "better-sqlite3";
import { agentv1 } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { enrollTestDevice, openSqliteStore, startTestCoordinator } from "@flotilla/coordinator/testing";

const BATCH = 1000;
const SECONDS = 6;
const MAX_BATCHES = 120;

const line = (seq: number) => `2026-01-01T00:00:00Z INFO request handled method=GET path=/api/items/${seq % 977} status=200 duration_ms=${seq % 250}`;

async function viaCoordinator(): Promise<number> {
  // Batches are built before the clock starts: what is measured is the coordinator's work. And
  // before the coordinator starts: building them holds the event loop for seconds, which the
  // coordinator (in this process) would take for overload and shed the first batches.
  const batches: Uint8Array[] = [];
  for (let b = 0, seq = 0; b < MAX_BATCHES; b++) {
    const records = Array.from({ length: BATCH }, () => {
      seq++;
      return create(agentv1.LogRecordSchema, { seq: BigInt(seq), timeUnixMs: BigInt(Date.now()), unit: "webapp", source: "stdout", line: line(seq) });
    });
    batches.push(gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records })), { level: 3 }));
  }
  const t = await startTestCoordinator();
  const d = await enrollTestDevice(t);
  try {
    let seq = 0;
    const start = performance.now();
    for (const payload of batches) {
      if (performance.now() - start > SECONDS * 1000) break;
      const res = await d.ship.shipLogs({ stream: "logs", compression: agentv1.Compression.GZIP, payload }, d.device);
      seq += BATCH;
      if (Number(res.ackedSeq) !== seq) throw new Error(`acknowledged ${res.ackedSeq}, expected ${seq}`);
    }
    return seq / ((performance.now() - start) / 1000);
  } finally {
    d.close();
    await t.close();
  }
}

async function direct(): Promise<number> {
  const dir = await tempDir("flotilla-bench-");
  const path = join(dir, "flotilla.db");
  await (await openSqliteStore(path)).close(); // the same schema, migrated
  const db = new SQLite(path);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  try {
    const insert = db.prepare(
      "INSERT INTO log_records (org_id, device_id, stream, seq, time, unit, source, line, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
    );
    const tx = db.transaction((from: number) => {
      for (let seq = from; seq < from + BATCH; seq++) {
        const l = line(seq);
        insert.run("org", "dev", "logs", seq, Date.now(), "webapp", "stdout", l, l.length + 70);
      }
    });
    let seq = 0;
    const start = performance.now();
    while (performance.now() - start < SECONDS * 1000) {
      tx(seq + 1);
      seq += BATCH;
    }
    return seq / ((performance.now() - start) / 1000);
  } finally {
    db.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs the log ingestion benchmark and prints its figures. */
export async function benchLogs(print: (line: string) => void): Promise<void> {
  const coordinator = await viaCoordinator();
  const baseline = await direct();
  print(`log ingestion (SQLite, batches of ${BATCH} lines, ${SECONDS} s each)`);
  print(`  coordinator ShipLogs:        ${Math.round(coordinator).toLocaleString("en")} lines/s`);
  print(`  direct inserts, same table:  ${Math.round(baseline).toLocaleString("en")} lines/s`);
  print(`  ratio coordinator/direct:    ${(coordinator / baseline).toFixed(2)}`);
}
