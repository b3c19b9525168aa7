import { spawnSync } from "node:child_process";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { adminv1, agentv1 } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { enrollTestDevice, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { TelemetryCounters } from "./counters.ts";
import { collect } from "./prometheus.ts";

// Compressed before any coordinator starts: 80 MiB of zlib on the event loop is a second or more
// on a loaded machine, which the coordinator (in this process) would take for overload and shed.
const BOMB = gzipSync(Buffer.alloc(80 * 1024 * 1024));

let t: TestCoordinator;
const closers: (() => void)[] = [];
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  for (const c of closers.splice(0)) c();
  await t.close();
});

async function codeOf(p: Promise<unknown>): Promise<Code | "ok"> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

async function setup() {
  const d = await enrollTestDevice(t);
  closers.push(d.close);
  return d;
}

const batch = (seqs: number[], over: Partial<agentv1.LogRecord> = {}) =>
  gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, {
    records: seqs.map((s) => create(agentv1.LogRecordSchema, { seq: BigInt(s), timeUnixMs: BigInt(Date.now()), unit: "webapp", source: "stdout", line: `line ${s}`, ...over })),
  })));

const GZIP = agentv1.Compression.GZIP;

describe("the telemetry services", () => {
  it("stores a resent batch once and acknowledges the highest contiguous seq", async () => {
    const s = await setup();
    expect((await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1, 2, 3]) }, s.device)).ackedSeq).toBe(3n);
    expect((await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([2, 3, 4]) }, s.device)).ackedSeq).toBe(4n);
    const { lines } = await s.query.queryLogs({ filter: { device: "box" } }, s.owner);
    expect(lines.map((l) => l.line)).toEqual(["line 1", "line 2", "line 3", "line 4"]);
    expect(lines[0]!.deviceName).toBe("box");
  });

  it("reads the calling device once per batch: the row the authorization read for the call", async () => {
    const s = await setup();
    const devices = t.coord.store.devices;
    const getDevice = devices.getDevice.bind(devices);
    let reads = 0;
    devices.getDevice = (orgId, id) => {
      reads++;
      return getDevice(orgId, id);
    };
    try {
      expect((await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1]) }, s.device)).ackedSeq).toBe(1n);
      expect(reads).toBe(1);
    } finally {
      devices.getDevice = getDevice;
    }
  });

  it("says when the newest lines are not all that matched, and pages every line from the oldest on", async () => {
    const s = await setup();
    await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1, 2, 3, 4, 5]) }, s.device);
    const newest = await s.query.queryLogs({ filter: { device: "box" }, limit: 2 }, s.owner);
    expect([newest.lines.map((l) => l.line), newest.more]).toEqual([["line 4", "line 5"], true]);
    expect((await s.query.queryLogs({ filter: { device: "box" }, limit: 5 }, s.owner)).more).toBe(false);
    const seen: string[] = [];
    let pageToken = "";
    do {
      const page = await s.query.queryLogs({ filter: { device: "box" }, limit: 2, fromOldest: true, pageToken }, s.owner);
      seen.push(...page.lines.map((l) => l.line));
      pageToken = page.nextPageToken;
    } while (pageToken && seen.length < 10);
    expect(seen).toEqual(["line 1", "line 2", "line 3", "line 4", "line 5"]);
    for (const token of ["not base64 json", Buffer.from("[1,2]").toString("base64url"), Buffer.from('[1,"d",1e300]').toString("base64url"), "x".repeat(600)]) {
      expect(await codeOf(s.query.queryLogs({ filter: { device: "box" }, fromOldest: true, pageToken: token }, s.owner))).toBe(Code.InvalidArgument);
    }
  });

  it("refuses invalid batches whole, with InvalidArgument or ResourceExhausted, and stores nothing of them", async () => {
    const s = await setup();
    const ship = (payload: Uint8Array, stream = "logs", compression = GZIP) => codeOf(s.ship.shipLogs({ stream, compression, payload }, s.device));
    expect(await ship(batch([1, 2, 3], { unit: "bad unit/../x" }))).toBe(Code.InvalidArgument);
    expect(await ship(batch([2, 1]))).toBe(Code.InvalidArgument);
    expect(await ship(batch([0]))).toBe(Code.InvalidArgument);
    expect(await ship(batch([1]), "Logs!")).toBe(Code.InvalidArgument);
    expect(await ship(Buffer.from("not gzip"))).toBe(Code.InvalidArgument);
    expect(await ship(BOMB)).toBe(Code.ResourceExhausted);
    expect(await codeOf(s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([5]), drops: { droppedThrough: 2n ** 60n, droppedTotal: 1n } }, s.device))).toBe(Code.InvalidArgument);
    const unsettled = (ranges: [bigint, bigint][], droppedThrough = 100n) =>
      codeOf(s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([101]), drops: { droppedThrough, droppedTotal: 1n, unsettled: ranges.map(([firstSeq, lastSeq]) => ({ firstSeq, lastSeq })) } }, s.device));
    expect(await unsettled([[5n, 4n]])).toBe(Code.InvalidArgument);
    expect(await unsettled([[5n, 9n], [9n, 12n]])).toBe(Code.InvalidArgument);
    expect(await unsettled([[5n, 9n], [1n, 2n]])).toBe(Code.InvalidArgument);
    expect(await unsettled([[0n, 2n]])).toBe(Code.InvalidArgument);
    expect(await unsettled([[90n, 101n]])).toBe(Code.InvalidArgument);
    expect(await unsettled(Array.from({ length: 17 }, (_, i): [bigint, bigint] => [BigInt(i * 2 + 1), BigInt(i * 2 + 1)]))).toBe(Code.InvalidArgument);
    expect((await s.query.queryLogs({ filter: {} }, s.owner)).lines).toEqual([]);
    expect((await s.query.getMetrics({ device: "box" }, s.owner)).logsDropped).toBe(0n);
  });

  it("counts records dropped while their batch was on its way as delivered", async () => {
    const s = await setup();
    const res = await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1, 2, 3]), drops: { droppedThrough: 5n, droppedTotal: 5n } }, s.device);
    expect(res.ackedSeq).toBe(5n);
    expect((await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([6]), drops: { droppedThrough: 5n, droppedTotal: 5n } }, s.device)).ackedSeq).toBe(6n);
    expect((await s.query.getMetrics({ device: "box" }, s.owner)).logsDropped).toBe(5n);
  });

  it("settles unsettled seqs: says how many it holds, counts the rest as dropped, and answers without the field when none were sent", async () => {
    const s = await setup();
    const plain = await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1, 2, 3]) }, s.device);
    expect(plain.unsettledHeld).toBeUndefined();
    const res = await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([9]), drops: { droppedThrough: 8n, droppedTotal: 3n, unsettled: [{ firstSeq: 1n, lastSeq: 5n }] } }, s.device);
    expect(res.unsettledHeld).toBe(3n);
    expect(res.ackedSeq).toBe(9n);
    expect((await s.query.getMetrics({ device: "box" }, s.owner)).logsDropped).toBe(5n);
  });

  it("takes telemetry from devices only and answers queries to signed-in admins only", async () => {
    const s = await setup();
    expect(await codeOf(s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1]) }, s.owner))).toBe(Code.PermissionDenied);
    expect(await codeOf(s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1]) }))).toBe(Code.Unauthenticated);
    expect(await codeOf(s.query.queryLogs({ filter: {} }))).toBe(Code.Unauthenticated);
    expect(await codeOf(s.query.queryLogs({ filter: {} }, s.device))).toBe(Code.PermissionDenied);
  });

  it("lets a viewer read its own organization's logs and never another's", async () => {
    const s = await setup();
    await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1]) }, s.device);
    await t.coord.store.access.createOrg({ id: "org_b", name: "globex", createdAt: Date.now() });
    await t.coord.store.telemetry.ingestLogs("org_b", "dev_b", "logs", [{ seq: 1, time: Date.now(), unit: "webapp", source: "stdout", line: "secret" }], { droppedThrough: 0, droppedTotal: 0 });
    const viewer = await t.as(s.orgId, "viewer");
    const { lines } = await s.query.queryLogs({ filter: { grep: "" } }, viewer);
    expect(lines.map((l) => l.line)).toEqual(["line 1"]);
    expect(await codeOf(s.query.queryLogs({ filter: { device: "dev_b" } }, viewer))).toBe(Code.NotFound);
    const other = await t.as("org_b", "owner");
    expect((await s.query.queryLogs({ filter: {} }, other)).lines.map((l) => l.line)).toEqual(["secret"]);
  });

  it("shows a device's clock as it claims, up to a day ahead of the coordinator's; a later claim is bounded and kept aside", async () => {
    const s = await setup();
    const now = Date.now();
    const records = [
      { seq: 1n, timeUnixMs: BigInt(now + 3_600_000), line: "an hour ahead" },
      { seq: 2n, timeUnixMs: BigInt(now + 100 * 365 * 86_400_000), line: "a century ahead" },
      { seq: 3n, timeUnixMs: 0n, line: "1970" },
    ].map((r) => create(agentv1.LogRecordSchema, { ...r, unit: "webapp", source: "stdout" }));
    await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records }))) }, s.device);
    const { lines } = await s.query.queryLogs({ filter: { device: "box" } }, s.owner);
    const at = Object.fromEntries(lines.map((l) => [l.line, Number(l.timeUnixMs)]));
    expect(at["an hour ahead"]).toBe(now + 3_600_000);
    expect(at["1970"]).toBe(0);
    expect(at["a century ahead"]).toBeGreaterThanOrEqual(now + 86_400_000);
    expect(at["a century ahead"]).toBeLessThanOrEqual(Date.now() + 86_400_000);
    const stored = await t.coord.store.telemetry.queryLogs(s.orgId, { deviceIds: [s.deviceId], limit: 10 });
    expect(stored.map((l) => l.claimedTime)).toEqual([undefined, now + 100 * 365 * 86_400_000, undefined]);
  });

  it("follows new lines after the stored tail, each once", async () => {
    const s = await setup();
    await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([1, 2]) }, s.device);
    const ac = new AbortController();
    const stream = s.query.followLogs({ filter: { device: "box" }, tail: 1 }, { ...s.owner, signal: ac.signal })[Symbol.asyncIterator]();
    expect((await stream.next()).value?.lines.map((l: adminv1.LogLine) => l.line)).toEqual(["line 2"]);
    await s.ship.shipLogs({ stream: "logs", compression: GZIP, payload: batch([2, 3]) }, s.device);
    expect((await stream.next()).value?.lines.map((l: adminv1.LogLine) => l.line)).toEqual(["line 3"]);
    ac.abort();
    await stream.return?.();
  });

  it("keeps device-chosen metric names out of the coordinator's own /metrics families, and the exposition valid", async () => {
    const s = await setup();
    const point = (name: string, value: number, attributes: Record<string, string> = {}, unit = "By", monotonic = false) =>
      create(agentv1.MetricPointSchema, { name, value, attributes, unit, monotonic });
    const payload = gzipSync(toBinary(agentv1.MetricSamplesSchema, create(agentv1.MetricSamplesSchema, {
      samples: [create(agentv1.MetricSampleSchema, {
        seq: 1n,
        timeUnixMs: BigInt(Date.now()),
        points: [
          // Named as the coordinator's own families are.
          point("process.resident.memory", 1e15),
          point("process.cpu", 1e9, {}, "s", true),
          point("flotilla.devices", 999, { state: "online" }, ""),
          // Two attribute keys that Prometheus spells the same, and one named like our own label.
          point("app.queue", 1, { "a.b": "x", a_b: "y", org: "forged" }, ""),
          // The same series twice, and one name as a gauge and a counter at once.
          point("app.jobs", 1, {}, ""),
          point("app.jobs", 2, {}, ""),
          point("app.hits.total", 5, {}, ""),
          point("app.hits", 6, {}, "", true),
        ],
      })],
    })));
    await s.ship.shipMetrics({ stream: "metrics", compression: GZIP, payload }, s.device);
    const text = await collect(t.coord.store, new TelemetryCounters(), 60_000);

    // The coordinator's families hold only the coordinator's own samples.
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(text).not.toMatch(/^process_resident_memory_bytes\{/m);
    expect(text).not.toMatch(/^process_cpu_seconds_total\{/m);
    expect(text).not.toMatch(/^flotilla_devices\{[^}]*device=/m);
    // The device's values appear under their own, prefixed names.
    expect(text).toMatch(/^flotilla_device_process_resident_memory_bytes\{org="[^"]+",device="box"\} 1000000000000000$/m);
    expect(text).toMatch(/^flotilla_device_process_cpu_seconds_total\{org="[^"]+",device="box"\} 1000000000$/m);
    expect(text).toMatch(/^flotilla_device_flotilla_devices\{org="[^"]+",device="box",state="online"\} 999$/m);
    // Each series once; a gauge named like a counter gets a name of its own.
    expect(text.match(/^flotilla_device_app_jobs\{/gm)).toHaveLength(1);
    expect(text).toMatch(/^flotilla_device_app_hits_total_value\{org="[^"]+",device="box"\} 5$/m);
    expect(text).toMatch(/^flotilla_device_app_hits_total\{org="[^"]+",device="box"\} 6$/m);
    const check = spawnSync("/usr/bin/promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    expect(check.stderr + check.stdout).toBe("");
    expect(check.status).toBe(0);
  });
});
