/**
 * Log ingestion: lines per second the coordinator stores through ShipLogs (gzip batches of
 * 1000 lines, one batch in flight per device, SQLite), from one device and from several at once,
 * beside the same rows inserted directly into the same table with better-sqlite3 in one
 * transaction per batch. The coordinator runs in a process of its own
 * (bench/logs-coordinator.ts), as it does for agents. The sides take turns, ROUNDS times each,
 * so a machine whose load (or disk) changes during the run weighs on all alike.
 */
import { gzipSync } from "node:zlib";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import SQLite from "better-sqlite3";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { agentv1, coordinatorTransport, newId, retryAfterMs } from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import { openSqliteStore } from "@flotilla/coordinator/testing";
import { LineChild } from "./line-child.ts";
import { writeResult } from "./results.ts";

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

/** Batches of BATCH lines, seqs 1 and up, gzipped as an agent ships them. */
function buildBatches(): Uint8Array[] {
  const batches: Uint8Array[] = [];
  for (let b = 0, seq = 0; b < BATCHES; b++) {
    const records = Array.from({ length: BATCH }, () => {
      seq++;
      return create(agentv1.LogRecordSchema, { seq: BigInt(seq), timeUnixMs: BigInt(Date.now()), unit: "webapp", source: "stdout", line: line(seq) });
    });
    batches.push(gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records })), { level: 3 }));
  }
  return batches;
}

/**
 * A coordinator in a process of its own, as in production (an agent ships from another
 * machine): the devices' side of the calls (their HTTP/2 clients) is not charged to it, nor
 * their garbage to its heap. `devices` enrolled devices, each with a connection of its own,
 * each shipping its own stream with one batch in flight, as agents do.
 */
async function viaCoordinator(batches: Uint8Array[], devices: number): Promise<Side & { shed(): number }> {
  const child = new LineChild("logs-coordinator.ts", [String(devices)], process.env.BENCH_LOGS_CHILD_ARGS?.split(" ") ?? []);
  const first = await child.next();
  const { url, headers } = JSON.parse(first) as { url: string; headers: Record<string, string>[] };
  const clients = await Promise.all(
    headers.map(async (h) => {
      const tr = await coordinatorTransport({ url, maxMessageBytes: 4 << 20 });
      return { tr, ship: createClient(agentv1.TelemetryService, tr.transport), options: { headers: h } };
    }),
  );
  let shed = 0;
  /** Ships a batch as an agent does: told the coordinator is busy, it waits as advised and again. */
  const ship = async (c: (typeof clients)[number], stream: string, payload: Uint8Array) => {
    for (;;) {
      try {
        return await c.ship.shipLogs({ stream, compression: agentv1.Compression.GZIP, payload }, c.options);
      } catch (err) {
        if (!(err instanceof ConnectError) || err.code !== Code.Unavailable) throw err;
        shed++;
        await new Promise((resolve) => setTimeout(resolve, retryAfterMs(err) ?? 100));
      }
    }
  };
  // Not measured: the first calls' compilation, as the direct inserts' first batch below.
  await Promise.all(clients.map((c) => ship(c, "warm-up", batches[0]!)));
  return {
    shed: () => shed,
    // Each round ships the same batches to a stream of its own: new lines for the store each time.
    async round(n, tally) {
      const start = performance.now();
      const lines = await Promise.all(
        clients.map(async (c) => {
          let seq = 0;
          for (const payload of batches) {
            if (performance.now() - start > SECONDS * 1000) break;
            const res = await ship(c, `logs-${n}`, payload);
            seq += BATCH;
            if (Number(res.ackedSeq) !== seq) throw new Error(`acknowledged ${res.ackedSeq}, expected ${seq}`);
          }
          return seq;
        }),
      );
      tally.lines += lines.reduce((a, b) => a + b, 0);
      tally.seconds += (performance.now() - start) / 1000;
    },
    async close() {
      for (const c of clients) c.tr.close();
      await child.close();
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
    "INSERT INTO log_records (org_id, device_id, stream, seq, time, unit, source, line, bytes, received_at, claimed_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
  );
  // The same rows as the coordinator stores: ids as long as its own, every column set.
  const orgId = `org_${newId()}`;
  const deviceId = `dev_${newId(16)}`;
  const tx = db.transaction((from: number) => {
    const receivedAt = Date.now();
    for (let seq = from; seq < from + BATCH; seq++) {
      const l = line(seq);
      insert.run(orgId, deviceId, "logs", seq, Date.now(), "webapp", "stdout", l, l.length + "webapp".length + 64, receivedAt, null);
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
        // A turn of the event loop (microseconds a batch), so the idle connection to the
        // coordinator keeps answering its pings.
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

/** Devices shipping at once in the second measurement: a fleet's batches share commits. */
const FLEET = Number(process.env.BENCH_LOGS_DEVICES ?? 8);

/** Runs the log ingestion benchmark and prints its figures. */
export async function benchLogs(print: (line: string) => void): Promise<void> {
  const batches = buildBatches();
  const one = await viaCoordinator(batches, 1);
  const fleet = await viaCoordinator(batches, FLEET);
  const baseline = await direct();
  const c: Tally = { lines: 0, seconds: 0 };
  const f: Tally = { lines: 0, seconds: 0 };
  const b: Tally = { lines: 0, seconds: 0 };
  try {
    for (let n = 1; n <= ROUNDS; n++) {
      await one.round(n, c);
      await fleet.round(n, f);
      await baseline.round(n, b);
    }
  } finally {
    await one.close();
    await fleet.close();
    await baseline.close();
  }
  const rate = (t: Tally) => t.lines / t.seconds;
  const n = (t: Tally) => Math.round(rate(t)).toLocaleString("en").padStart(9);
  print(`log ingestion (SQLite, batches of ${BATCH} lines, one in flight per device, ${ROUNDS} alternating rounds of up to ${SECONDS} s each)`);
  print(`  coordinator ShipLogs, one device:        ${n(c)} lines/s   ratio to direct ${(rate(c) / rate(b)).toFixed(2)}`);
  print(`  coordinator ShipLogs, ${String(FLEET).padEnd(2)} devices at once: ${n(f)} lines/s   ratio to direct ${(rate(f) / rate(b)).toFixed(2)}`);
  print(`  direct inserts, same table:              ${n(b)} lines/s   (one transaction per batch)`);
  // Waits as advised are in the figure: a machine stalled for a second sheds, as it would agents.
  const shed = one.shed() + fleet.shed();
  if (shed > 0) print(`  (batches the coordinator shed as overloaded, then took: ${shed})`);
  const file = await writeResult("logs", {
    batchLines: BATCH,
    devices: FLEET,
    rounds: ROUNDS,
    oneDevice: { linesPerSecond: rate(c), ratio: rate(c) / rate(b) },
    devicesAtOnce: { linesPerSecond: rate(f), ratio: rate(f) / rate(b) },
    direct: { linesPerSecond: rate(b) },
    shed,
  });
  print(`  written to ${file}`);
}
