/**
 * Rollout store cost per device: a one-wave rollout of N devices built directly in a SQLite store
 * (no network, no agents), started (one transition notifies every device), then every device
 * driven through its 7 release steps (checking, downloading, downloading done, verifying,
 * activating, health-checking, healthy) as the engine does it: the claim lookup, then one
 * transition that reads the device. Devices advance in rounds (every device's first step, then
 * every device's second...), so all of them are in flight together, as in a real fleet.
 *
 * Measured for each size (default 1,000 and 10,000) on this branch's code, and beside it on the
 * code path before wave counters (the transition that read every device of the rollout), taken
 * from git (BENCH_ROLLOUT_BASELINE, default the commit before them) and loaded into the same
 * process against the same schema. The old path is measured on a sample of devices (every
 * device of the rollout in flight, BENCH_ROLLOUT_SAMPLE of them driven through their steps,
 * default 50), since at 10,000 devices it would take hours to drive them all.
 *
 * Printed as a table (per-device store time of the 7 steps, wave start per device, one tick
 * while every device is in flight, and the growth factor from the smallest to the largest size;
 * target ≤ 1.5) and written as JSON (bench/results/). Asserts nothing about speed.
 *
 *   npm run bench -- rollout
 *   npm run bench -- rollout --rollout-devices 1000,10000   # or BENCH_ROLLOUT_DEVICES
 *   BENCH_ROLLOUT_BASELINE=none                             # skip the old code path
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Kysely } from "kysely";
import { tempDir } from "@flotilla/protocol/testing";
import { openSqliteStore } from "@flotilla/coordinator/testing";
// The rollout decisions and row types of this branch (benchmarks may reach into a package's
// sources: the old code path below is loaded the same way, by path).
import { advance, onStep } from "../packages/coordinator/src/rollouts/decide.ts";
import type { RolloutDeviceRow, RolloutRow, Store } from "../packages/coordinator/src/store/index.ts";
import { repoRoot } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

const ORG = "org_bench";
const OFFLINE_AFTER = 3_600_000;
const BASELINE = process.env.BENCH_ROLLOUT_BASELINE ?? "1aff85b2c8c1c7f27b625b07c4d8ba1807421fc7";
const SAMPLE = Number(process.env.BENCH_ROLLOUT_SAMPLE ?? 50);
/** The 7 release steps of a device that installs and passes its health check. */
const STEPS: [string, number][] = [
  ["checking", 0],
  ["downloading", 0],
  ["downloading", 10],
  ["verifying", 10],
  ["activating", 10],
  ["health-checking", 10],
  ["healthy", 10],
];

/** Rollout sizes from `--rollout-devices a,b` or BENCH_ROLLOUT_DEVICES, default 1000,10000. */
function sizes(argv = process.argv.slice(2)): number[] {
  const i = argv.findIndex((a) => a === "--rollout-devices" || a.startsWith("--rollout-devices="));
  const text = i < 0 ? (process.env.BENCH_ROLLOUT_DEVICES ?? "1000,10000") : argv[i]!.includes("=") ? argv[i]!.split("=")[1]! : argv[i + 1] ?? "";
  const out = text.split(",").map((s) => Number(s.trim()));
  if (out.length === 0 || out.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`invalid rollout sizes ${JSON.stringify(text)}: expected e.g. 1000,10000`);
  return out;
}

/** What a code path offers the benchmark: one transition per kind of event. */
interface Path {
  name: string;
  start(store: Store, id: string, now: number): Promise<void>;
  step(store: Store, id: string, deviceId: string, step: string, bytes: number, now: number): Promise<void>;
}

const event = (step: string, bytes: number) => ({ name: "webapp", targetPath: "webapp/2/webapp.tar.gz", step, bytesDone: bytes, bytesTotal: 10, error: "" });

/** This branch: counters, the event's device only, batched notification. */
const current: Path = {
  name: "wave counters",
  async start(store, id, now) {
    await store.rollouts.transition(ORG, id, now, (s) => advance(s, now, OFFLINE_AFTER));
  },
  async step(store, id, deviceId, step, bytes, now) {
    await store.rollouts.claimOf(ORG, deviceId);
    await store.rollouts.transition(ORG, id, now, (s) => onStep(s, deviceId, event(step, bytes), now, OFFLINE_AFTER), { deviceId });
  },
};

/** Internals of the SQLite store, for the old rollout store to run on the same database. */
type Internals = { db: Kysely<unknown>; adapter: unknown };

/**
 * The code path before wave counters, from git: its rollout store, notification and decisions,
 * written to a temporary directory with their imports pointed at this checkout's other files.
 */
async function baselinePath(ref: string): Promise<{ path: Path; cleanup: () => Promise<void> } | string> {
  const files = [
    "packages/coordinator/src/store/rollouts/rollout-store.ts",
    "packages/coordinator/src/store/rollouts/rollout-notify.ts",
    "packages/coordinator/src/store/rollouts/rollout-rows.ts",
    "packages/coordinator/src/rollouts/decide.ts",
  ];
  const dir = await mkdtempIn(tmpdir());
  try {
    for (const f of files) {
      let text = execFileSync("git", ["show", `${ref}:${f}`], { cwd: repoRoot, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      text = text.replace(/from "(\.{1,2}\/[^"]+)"/g, (_m, spec: string) => {
        const target = relative(repoRoot, resolve(repoRoot, dirname(f), spec));
        return `from ${JSON.stringify(files.includes(target) ? join(dir, target) : join(repoRoot, target))}`;
      });
      await mkdir(join(dir, dirname(f)), { recursive: true });
      await writeFile(join(dir, f), text);
    }
    type OldDecide = (r: RolloutRow, d: unknown[]) => unknown;
    const storeMod = (await import(pathToFileURL(join(dir, files[0]!)).href)) as { KyselyRolloutStore: new (db: unknown, adapter: unknown) => { transition(o: string, id: string, now: number, d: OldDecide): Promise<unknown> } };
    const decide = (await import(pathToFileURL(join(dir, files[3]!)).href)) as {
      advance(r: RolloutRow, d: unknown[], now: number, off: number): unknown;
      onStep(r: RolloutRow, d: unknown[], id: string, e: ReturnType<typeof event>, now: number, off: number): unknown;
    };
    const old = new WeakMap<Store, InstanceType<typeof storeMod.KyselyRolloutStore>>();
    const of = (store: Store) => {
      let s = old.get(store);
      if (!s) {
        const { db, adapter } = store as unknown as Internals;
        s = new storeMod.KyselyRolloutStore(db, adapter);
        old.set(store, s);
      }
      return s;
    };
    const path: Path = {
      name: `before counters (${ref})`,
      async start(store, id, now) {
        await of(store).transition(ORG, id, now, (r, d) => decide.advance(r, d, now, OFFLINE_AFTER));
      },
      async step(store, id, deviceId, step, bytes, now) {
        await store.rollouts.claimOf(ORG, deviceId);
        await of(store).transition(ORG, id, now, (r, d) => decide.onStep(r, d, deviceId, event(step, bytes), now, OFFLINE_AFTER));
      },
    };
    return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    return `the code path of ${ref} could not be loaded: ${(err as Error).message.split("\n")[0]}`;
  }
}

async function mkdtempIn(base: string): Promise<string> {
  const dir = join(base, `flotilla-bench-rollout-${randomBytes(4).toString("hex")}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** A store with an organization, the release and N approved, connected devices in one 100% wave. */
async function fixture(n: number, now: number): Promise<{ store: Store; id: string; ids: string[]; close: () => Promise<void> }> {
  const dir = await tempDir("flotilla-bench-rollout-");
  const store = await openSqliteStore(join(dir, "flotilla.db"));
  await store.access.createOrg({ id: ORG, name: "bench", createdAt: now });
  await store.releases.addReleases(
    [1, 2].map((counter) => ({ orgId: ORG, name: "webapp", counter, version: `1.${counter}.0`, kind: "bundle", targetPath: `webapp/${counter}/webapp.tar.gz`, sha256: "a".repeat(64), length: 10, meta: "{}", createdAt: now })),
  );
  const ids = Array.from({ length: n }, (_, i) => `dev_${String(i).padStart(6, "0")}`);
  // Devices inserted directly, in one transaction: building the fixture is not what is measured.
  const { db } = store as unknown as Internals;
  const devices = db as unknown as Kysely<{ devices: Record<string, unknown> }>;
  await devices.transaction().execute(async (trx) => {
    for (let i = 0; i < n; i += 500) {
      await trx
        .insertInto("devices")
        .values(
          ids.slice(i, i + 500).map((id) => ({
            id, org_id: ORG, name: id, public_key: `pk-${id}`, lifecycle: "approved", labels: "{}", facts: "{}", agent_version: "0.1.0",
            capabilities: JSON.stringify(["release:bundle"]), generation: 1, observed_generation: 1, connected: 1, last_seen_at: now, join_token_id: null, created_at: now, updated_at: now,
          })),
        )
        .execute();
    }
  });
  const id = `ro_bench${n}`;
  const rollout: RolloutRow = {
    id, orgId: ORG, releaseName: "webapp", releaseVersion: "1.2.0", releaseCounter: 2,
    spec: { releaseName: "webapp", releaseVersion: "1.2.0", selector: "", waves: ["100%"], maxParallel: 0, failureThreshold: String(n), soakMs: 0, approveEachWave: false, deadlineMs: 0 },
    waves: [{ number: 1, entry: "100%" }], ineligible: [], status: "running", reason: "", currentWave: 1, waveFinishedAt: null, approvedWave: 1,
    toleratedFailures: n, deadlineAt: null, createdBy: "bench", createdAt: now, updatedAt: now, version: 1,
  };
  const rows: RolloutDeviceRow[] = ids.map((deviceId, position) => ({
    rolloutId: id, orgId: ORG, deviceId, name: deviceId, wave: 1, position, state: "pending", bytesDone: 0, bytesTotal: 0, error: "",
    previousVersion: "", previousCounter: 0, rollbackCounter: 0, notifiedAt: null, updatedAt: now,
  }));
  const created = await store.rollouts.createRollout(rollout, rows);
  if (!created.ok) throw new Error("rollout not created");
  return { store, id, ids, close: async () => { await store.close(); await rm(dir, { recursive: true, force: true }); } };
}

interface Measured {
  path: string;
  devices: number;
  /** Devices driven through their 7 steps (a sample on the old path). */
  driven: number;
  /** The transition that notified every device, per device (ms). */
  startMsPerDevice: number;
  /** The 7 release steps of one device: store time (ms, wall clock: SQLite syncs every commit to disk). */
  stepsMsPerDevice: number;
  /** The same, in CPU time of this process (ms). */
  stepsCpuMsPerDevice: number;
  /** One tick (advance) while every device is in flight (ms). */
  tickMs: number;
  /** Rollout status after the last step (completed when every device was driven). */
  status: string;
}

async function measure(path: Path, n: number, driven: number, print: (line: string) => void): Promise<Measured> {
  const now = Date.now();
  const f = await fixture(n, now);
  try {
    let t = performance.now();
    await path.start(f.store, f.id, now);
    const startMs = performance.now() - t;
    const notified = (await f.store.rollouts.listRolloutDevices(ORG, f.id)).filter((d) => d.state === "notified").length;
    if (notified !== n) throw new Error(`${path.name}: ${notified} of ${n} devices notified`);
    const ids = f.ids.slice(0, driven);
    let stepsMs = 0;
    let stepsCpuMs = 0;
    let tickMs = 0;
    for (const [k, [step, bytes]] of STEPS.entries()) {
      t = performance.now();
      const cpu = process.cpuUsage();
      for (const deviceId of ids) await path.step(f.store, f.id, deviceId, step, bytes, now + 1 + k);
      stepsMs += performance.now() - t;
      const used = process.cpuUsage(cpu);
      stepsCpuMs += (used.user + used.system) / 1000;
      if (k === 3) {
        t = performance.now();
        await path.start(f.store, f.id, now + 1 + k);
        tickMs = performance.now() - t;
      }
    }
    const status = (await f.store.rollouts.getRollout(ORG, f.id))?.status ?? "?";
    if (driven === n && status !== "completed") throw new Error(`${path.name}: rollout of ${n} devices ${status}, expected completed`);
    const m = { path: path.name, devices: n, driven, startMsPerDevice: startMs / n, stepsMsPerDevice: stepsMs / driven, stepsCpuMsPerDevice: stepsCpuMs / driven, tickMs, status };
    print(`rollout: ${path.name}, ${n} devices (${driven} driven): ${m.stepsMsPerDevice.toFixed(2)} ms (${m.stepsCpuMsPerDevice.toFixed(2)} ms CPU) per device for 7 steps, start ${m.startMsPerDevice.toFixed(3)} ms per device, tick ${tickMs.toFixed(1)} ms`);
    return m;
  } finally {
    await f.close();
  }
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : "-");

/** Table: one row per code path and figure, one column per size, and the growth factor. */
function table(results: Measured[], ns: number[]): string[] {
  const paths = [...new Set(results.map((r) => r.path))];
  const first = ns[0]!, last = ns[ns.length - 1]!;
  const head = ["", ...ns.map((n) => `${n} devices`), `growth (x${last / first} devices)`];
  const rows: string[][] = [];
  for (const p of paths) {
    const at = (n: number) => results.find((r) => r.path === p && r.devices === n);
    const figure = (label: string, get: (m: Measured) => number, d: number) => {
      const a = at(first), b = at(last);
      rows.push([`${p}: ${label}`, ...ns.map((n) => { const m = at(n); return m ? fmt(get(m), d) : "-"; }), a && b && get(a) > 0 ? fmt(get(b) / get(a), 2) : "-"]);
    };
    figure("7 steps, store ms per device", (m) => m.stepsMsPerDevice, 2);
    figure("7 steps, CPU ms per device", (m) => m.stepsCpuMsPerDevice, 2);
    figure("wave start, store ms per device", (m) => m.startMsPerDevice, 3);
    figure("one tick while all in flight, ms", (m) => m.tickMs, 1);
  }
  const widths = head.map((_, i) => Math.max(head[i]!.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ");
  return [line(head), ...rows.map(line)];
}

export async function benchRollout(print: (line: string) => void): Promise<void> {
  const ns = sizes();
  const results: Measured[] = [];
  for (const n of ns) results.push(await measure(current, n, n, print));
  let baseline: string | undefined;
  if (BASELINE !== "none") {
    const loaded = await baselinePath(BASELINE);
    if (typeof loaded === "string") {
      baseline = loaded;
      print(`rollout: ${loaded}`);
    } else {
      try {
        for (const n of ns) results.push(await measure(loaded.path, n, Math.min(n, SAMPLE), print));
      } finally {
        await loaded.cleanup();
      }
    }
  }
  print("");
  print("rollout store cost per device (SQLite, one wave, 7 release steps per device; growth target ≤ 1.5):");
  for (const l of table(results, ns)) print(l);
  const growth = (p: string) => {
    const a = results.find((r) => r.path === p && r.devices === ns[0]);
    const b = results.find((r) => r.path === p && r.devices === ns[ns.length - 1]);
    return a && b ? { storeMs: b.stepsMsPerDevice / a.stepsMsPerDevice, cpuMs: b.stepsCpuMsPerDevice / a.stepsCpuMsPerDevice } : null;
  };
  const file = await writeResult("rollout", {
    baselineRef: BASELINE,
    ...(baseline ? { baselineUnavailable: baseline } : {}),
    growth: Object.fromEntries([...new Set(results.map((r) => r.path))].map((p) => [p, growth(p)])),
    results,
  });
  print(`written to ${relative(repoRoot, file)}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchRollout((l) => process.stdout.write(`${l}\n`));
