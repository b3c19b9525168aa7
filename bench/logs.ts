/**
 * Log ingestion: lines per second the coordinator stores through ShipLogs (gzip batches of
 * 1000 lines, one batch in flight, SQLite), beside the same rows inserted directly into the
 * same table with better-sqlite3 in one transaction per batch. The two take turns, ROUNDS
 * times each, so a machine whose load (or disk) changes during the run weighs on both alike.
 */
import { gzipSync } from "node:zlib";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import SQLite from "better-sqlite3";
import { Code, ConnectError } from "@connectrpc/connect";
import { agentv1, retryAfterMs } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { enrollTestDevice, openSqliteStore, startTestCoordinator } from "@flotilla/coordinator/testing";

const BATCH = 1000;
const ROUNDS = 3;
const SECONDS = 2;
/** Batches built ahead; a round that ships them all before its time is up ends early. */
const BATCHES = 150;

const line = (seq: number) => `2026-01-01T00:00:00Z INFO request handled method=GET path=/api/items/${seq % 977} status=200 duration_ms=${seq % 250}`;

/** Lines and seconds one side took. */
interface Tally {
  lines: number;
  seconds: number;
}

interface Side {
  round(n: number, tally: Tally): Promise<void>;
  close(): Promise<void>;
}

async function viaCoordinator(): Promise<Side & { shed(): number }> {
  // Batches are built before the clock starts: what is measured is the coordinator's work. And
  // before the coordinator starts: building them holds the event loop for seconds, which the
  // coordinator (in this process) would take for overload and shed the first batches.
  const batches: Uint8Array[] = [];
  for (let b = 0, seq = 0; b < BATCHES; b++) {
    const records = Array.from({ length: BATCH }, () => {
      seq++;
      return create(agentv1.LogRecordSchema, { seq: BigInt(seq), timeUnixMs: BigInt(Date.now()), unit: "webapp", source: "stdout", line: line(seq) });
    });
    batches.push(gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records })), { level: 3 }));
  }
  const t = await startTestCoordinator();
  const d = await enrollTestDevice(t);
  let shed = 0;
  /** Ships a batch as an agent does: told the coordinator is busy, it waits as advised and again. */
  const ship = async (stream: string, payload: Uint8Array) => {
    for (;;) {
      try {
        return await d.ship.shipLogs({ stream, compression: agentv1.Compression.GZIP, payload }, d.device);
      } catch (err) {
        if (!(err instanceof ConnectError) || err.code !== Code.Unavailable) throw err;
        shed++;
        await new Promise((resolve) => setTimeout(resolve, retryAfterMs(err) ?? 100));
      }
    }
  };
  // Not measured: the coordinator's own start (which a loaded machine may take for overload for
  // a second) and the first calls' compilation, as the direct inserts' first batch below.
  await ship("warm-up", batches[0]!);
  return {
    shed: () => shed,
    // Each round ships the same batches to a stream of its own: new lines for the store each time.
    async round(n, tally) {
      let seq = 0;
      const start = performance.now();
      for (const payload of batches) {
        if (performance.now() - start > SECONDS * 1000) break;
        const res = await ship(`logs-${n}`, payload);
        seq += BATCH;
        if (Number(res.ackedSeq) !== seq) throw new Error(`acknowledged ${res.ackedSeq}, expected ${seq}`);
      }
      tally.lines += seq;
      tally.seconds += (performance.now() - start) / 1000;
    },
    async close() {
      d.close();
      await t.close();
    },
  };
}

async function direct(): Promise<Side> {
  const dir = await tempDir("flotilla-bench-");
  const path = join(dir, "flotilla.db");
  await (await openSqliteStore(path)).close(); // the same schema, migrated
  const db = new SQLite(path);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  const insert = db.prepare(
    "INSERT INTO log_records (org_id, device_id, stream, seq, time, unit, source, line, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
  );
  const tx = db.transaction((from: number) => {
    for (let seq = from; seq < from + BATCH; seq++) {
      const l = line(seq);
      insert.run("org", "dev", "logs", seq, Date.now(), "webapp", "stdout", l, l.length + 70);
    }
  });
  tx(1); // not measured, as the coordinator's warm-up batch
  let seq = BATCH;
  return {
    async round(_n, tally) {
      const start = performance.now();
      let lines = 0;
      while (performance.now() - start < SECONDS * 1000 && lines < BATCHES * BATCH) {
        tx(seq + 1);
        seq += BATCH;
        lines += BATCH;
        // The coordinator shares this process: a loop held for seconds would read as overload
        // and shed its next round. A turn of the event loop costs microseconds a batch.
        await new Promise((resolve) => setImmediate(resolve));
      }
      tally.lines += lines;
      tally.seconds += (performance.now() - start) / 1000;
    },
    async close() {
      db.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Runs the log ingestion benchmark and prints its figures. */
export async function benchLogs(print: (line: string) => void): Promise<void> {
  const coordinator = await viaCoordinator();
  const baseline = await direct();
  const c: Tally = { lines: 0, seconds: 0 };
  const b: Tally = { lines: 0, seconds: 0 };
  try {
    for (let n = 1; n <= ROUNDS; n++) {
      await coordinator.round(n, c);
      await baseline.round(n, b);
    }
  } finally {
    await coordinator.close();
    await baseline.close();
  }
  const rate = (t: Tally) => t.lines / t.seconds;
  print(`log ingestion (SQLite, batches of ${BATCH} lines, ${ROUNDS} alternating rounds of up to ${SECONDS} s each)`);
  print(`  coordinator ShipLogs:        ${Math.round(rate(c)).toLocaleString("en")} lines/s`);
  print(`  direct inserts, same table:  ${Math.round(rate(b)).toLocaleString("en")} lines/s`);
  print(`  ratio coordinator/direct:    ${(rate(c) / rate(b)).toFixed(2)}`);
  // Waits as advised are in the figure: a machine stalled for a second sheds, as it would agents.
  if (coordinator.shed() > 0) print(`  (batches the coordinator shed as overloaded, then took: ${coordinator.shed()})`);
}
