import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { targetRows, targetTable } from "./targets.ts";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function resultsDir(files: Record<string, object | string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "flotilla-targets-"));
  dirs.push(dir);
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), typeof data === "string" ? data : JSON.stringify(data));
  return dir;
}

const fleetResult = (devices: number, over: Record<string, unknown> = {}) => ({
  devices,
  replicas: 0,
  labelFanOutSeconds: devices / 1000,
  admin: { deviceLsDuringRollout: { p99: 800, failed: 0 }, rolloutShowDuringRollout: { p99: 900, failed: 0 } },
  simErrorsDuringRollout: { total: 0 },
  idle: { cpuCores: devices / 50_000, rssMiB: devices / 10 },
  rollout: { wallSeconds: 30, fanOutSeconds: 0.5, cpuMsPerDevice: 5, cpuMsPerDeviceAboveIdle: 2, finished: true, healthy: devices, failed: 0 },
  ...over,
});

const row = (rows: Awaited<ReturnType<typeof targetRows>>, starts: string) => {
  const r = rows.find((x) => x.target.trimStart().startsWith(starts));
  if (!r) throw new Error(`no row ${starts}: ${rows.map((x) => x.target).join(" | ")}`);
  return r;
};

describe("the scale targets table", () => {
  it("says which command measures a target with no result on record", async () => {
    const rows = await targetRows(await resultsDir({}));
    expect(rows.every((r) => r.figure === "not measured")).toBe(true);
    expect(row(rows, "tunnel").source).toBe("npm run bench -- tunnel");
    expect(row(rows, "idle: 20,000").source).toContain("--devices 19000 --idle-only");
  });

  it("prints a figure an older or damaged result file lacks as -, and goes on", async () => {
    const rows = await targetRows(
      await resultsDir({
        "tunnel-2026-12-02T00-00-00-000Z.json": { date: "2026-12-02T00:00:00.000Z", directMBps: 1000, tunnelMBps: null, ratio: null },
        "agent-2026-12-02T00-00-00-000Z.json": { date: "2026-12-02T00:00:00.000Z", agent: { rssMiB: 45 }, bareNode: {} },
      }),
    );
    expect(row(rows, "tunnel").figure).toBe("- (- of 1,000 MB/s)");
    expect(row(rows, "tunnel").met).toBe(false);
    expect(row(rows, "idle agent RSS").figure).toBe("47.2 MB (bare node - MB)");
  });

  it("takes each figure from the newest run that measured it, and judges it against its target", async () => {
    const rows = await targetRows(
      await resultsDir({
        // An older run that met the fan-out target, and a newer one that did not: the newer counts.
        "fleet-2026-12-01T00-00-00-000Z.json": { date: "2026-12-01T00:00:00.000Z", results: [fleetResult(1000), fleetResult(10_000, { labelFanOutSeconds: 0.5 })] },
        "fleet-2026-12-02T00-00-00-000Z.json": {
          date: "2026-12-02T00:00:00.000Z",
          results: [
            fleetResult(1000),
            fleetResult(10_000, {
              labelFanOutSeconds: 3.5,
              rollout: { wallSeconds: 70, fanOutSeconds: 2, cpuMsPerDevice: 10, cpuMsPerDeviceAboveIdle: 2.5, finished: true, healthy: 10_000, failed: 0 },
              simErrorsDuringRollout: { total: 12, "watch: deadlineexceeded": 7, "report: unavailable": 5 },
            }),
          ],
        },
        // An idle-only run of a larger fleet that did not all come online.
        "fleet-2026-12-03T00-00-00-000Z.json": {
          date: "2026-12-03T00:00:00.000Z",
          results: [fleetResult(5000, { labelFanOutSeconds: null, rollout: { wallSeconds: null } })],
          failed: [{ devices: 19_000, replicas: 0, error: "not every device online after 30 minutes" }],
        },
        "report-2026-12-02T00-00-00-000Z.json": { date: "2026-12-02T00:00:00.000Z", devices: 10_000, bare: { callsPerSecond: 4000 }, coordinator: { callsPerSecond: 2400 }, paced: { coordinator: { p99Ms: 32 } } },
        "logs-2026-12-02T00-00-00-000Z.json": {
          date: "2026-12-02T00:00:00.000Z",
          devices: 8,
          oneDevice: { linesPerSecond: 90_000, ratio: 0.45 },
          devicesAtOnce: { linesPerSecond: 110_000, ratio: 0.55 },
        },
        "tunnel-2026-12-02T00-00-00-000Z.json": { date: "2026-12-02T00:00:00.000Z", directMBps: 1000, tunnelMBps: 300, ratio: 0.3 },
        "agent-2026-12-02T00-00-00-000Z.json": { date: "2026-12-02T00:00:00.000Z", agent: { rssMiB: 45 }, bareNode: { rssMiB: 38 } },
        "download-2026-12-02T00-00-00-000Z.json": {
          date: "2026-12-02T00:00:00.000Z",
          single: { ratio: 0.85, agentMBps: 340, curlMBps: 400 },
          concurrent: { downloads: 50, ratio: 0.5, agentMBps: 200, curlMBps: 380, curlHttp1MBps: 400 },
        },
        "download-2026-12-01T00-00-00-000Z.json": "{ half-writ",
      }),
    );
    const fanOut = row(rows, "fan-out");
    expect(fanOut.figure).toBe("3.50 s; 2.00 s");
    expect(fanOut.met).toBe(false);
    expect(fanOut.source).toContain("fleet-2026-12-02");
    expect(row(rows, "one-wave rollout").met).toBe(false); // 70 s
    expect(row(rows, "growth").figure).toMatch(/^2\.00 \(5\.0 to 10\.0 ms; above idle 1\.25\)/);
    expect(row(rows, "admin calls").met).toBe(true);
    expect(row(rows, "simulated devices' time-outs").figure).toBe("watch: deadlineexceeded 7");
    // The largest idle fleet measured stands in for 20,000, and is judged only if it already misses.
    const idle = row(rows, "idle: 20,000");
    expect(idle.figure).toMatch(/^10,000 devices/);
    expect(idle.met).toBeUndefined();
    expect(row(rows, "19,000 devices tried").figure).toContain("not every device online");
    expect(row(rows, "Report RPC").met).toBe(true);
    expect(row(rows, "artifact download, beside curl plus fsync: one agent").met).toBe(true);
    expect(row(rows, "artifact download, beside curl plus fsync: 50 at once").met).toBe(false);
    // Beside the faster curl, the one the ratio was taken against.
    expect(row(rows, "artifact download, beside curl plus fsync: 50 at once").figure).toBe("0.50 (200 MB/s; curl 400)");
    expect(row(rows, "log ingestion").met).toBe(true); // 8 devices at once: 0.55 and 110,000/s
    expect(row(rows, "tunnel").met).toBe(false);
    expect(row(rows, "idle agent RSS").met).toBe(true); // 45 MiB is 47.2 MB
    const table = targetTable(rows);
    expect(table[0]).toContain("latest figure");
    expect(table.find((l) => l.includes("tunnel"))).toContain("NOT MET");
  });
});
