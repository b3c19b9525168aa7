/**
 * Fleet scale: a real coordinator process (SQLite, default keep-alive and offline timings) and
 * `flotilla sim` with N simulated devices in worker processes, for each fleet size given.
 *
 *   (a) connected idle devices: the coordinator's RSS and CPU over a window, beside the same
 *       coordinator with no device connected (measured first, in the same run);
 *   (b) a label change on every device (`device label set --selector`): the time until every
 *       device had it in its desired state (label fan-out);
 *   (c) a one-wave rollout to every device (7 release steps each): wall time from `rollout
 *       start` until it completed, the time until every device had the release in its desired
 *       state (fan-out), and the coordinator's CPU per device; then the growth factor of each
 *       between the smallest and the largest fleet size;
 *   (d) admin latency: `device ls --selector` and `rollout show` timed end to end (CLI process
 *       included) while the rollout runs, beside the same `device ls` on the idle fleet and a
 *       CLI call that does not reach the coordinator (`flotilla --version`), in the same run;
 *       and how many simulated devices' calls failed during the rollout (e.g. ping time-outs).
 *
 * Figures are printed as a table and written as JSON (bench/results/). Asserts nothing about
 * speed. Every run is bounded: each wait has a deadline, and the simulator and coordinator are
 * stopped at the end.
 *
 *   npm run bench -- fleet                          # 200 and 1000 devices
 *   npm run bench -- fleet --devices 1000,10000     # or BENCH_FLEET_DEVICES=1000,10000
 *   BENCH_FLEET_IDLE_S=120                          # idle measuring window (default 60 s, the agents' metric shipping interval)
 *   BENCH_FLEET_ENROLL_MIN=60                       # how long enrolling and connecting every device may take (default 30 minutes)
 *   npm run bench -- fleet --devices 19000 --idle-only   # enroll and idle only (BENCH_FLEET_IDLE_ONLY=1)
 *   BENCH_FLEET_ROLLOUT_S=1800                      # give up waiting for a rollout after (default 900 s)
 *   npm run bench -- fleet --devices 1000 --replicas 1,2   # on PostgreSQL (FLOTILLA_TEST_POSTGRES_URL):
 *                                                   # one process, then `coordinator --replicas 2`
 *
 * With --replicas, every run is on a fresh PostgreSQL database (so 1 and 2 differ only in the
 * number of processes), and CPU and RSS are those of the coordinator and its replica workers.
 */
import { spawnSync } from "node:child_process";
import { connect as http2Connect, type ClientHttp2Session } from "node:http2";
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { Fleet, freshPostgresDatabase } from "../test/e2e/support/fleet.ts";
import { publish } from "../test/e2e/support/rollouts.ts";
import { Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";
import { benchTargets } from "./targets.ts";

const CLK_TCK = 100; // Linux USER_HZ
/** How long enrolling and connecting the whole fleet may take (`BENCH_FLEET_ENROLL_MIN`, default 30). */
const ENROLL_DEADLINE_MS = Number(process.env.BENCH_FLEET_ENROLL_MIN ?? 30) * 60_000;
// At least a minute: agents ship their metric samples once a minute.
const IDLE_S = Number(process.env.BENCH_FLEET_IDLE_S ?? 60);
const ROLLOUT_S = Number(process.env.BENCH_FLEET_ROLLOUT_S ?? 900);
/** `--idle-only` (or BENCH_FLEET_IDLE_ONLY=1): enroll, measure idle, stop; no label change, rollout or admin calls. */
const IDLE_ONLY = process.argv.includes("--idle-only") || process.env.BENCH_FLEET_IDLE_ONLY === "1";

/** Fleet sizes from `--devices a,b` or BENCH_FLEET_DEVICES, default 200,1000. */
export function fleetSizes(argv = process.argv.slice(2)): number[] {
  const i = argv.findIndex((a) => a === "--devices" || a.startsWith("--devices="));
  const text = i < 0 ? (process.env.BENCH_FLEET_DEVICES ?? "200,1000") : argv[i]!.includes("=") ? argv[i]!.split("=")[1]! : argv[i + 1] ?? "";
  const sizes = text.split(",").map((s) => Number(s.trim()));
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`invalid fleet sizes ${JSON.stringify(text)}: expected e.g. 200,1000`);
  return sizes;
}

/** CPU seconds (user + system) a process has used, from /proc. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / CLK_TCK; // utime, stime (fields 14 and 15)
}

/** Resident memory in MiB, from /proc. */
async function rssMiB(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0) / 1024;
}

/** Sizes of `--replicas a,b` or BENCH_FLEET_REPLICAS: replica counts on PostgreSQL; [] for SQLite. */
export function replicaCounts(argv = process.argv.slice(2)): number[] {
  const i = argv.findIndex((a) => a === "--replicas" || a.startsWith("--replicas="));
  const text = i < 0 ? (process.env.BENCH_FLEET_REPLICAS ?? "") : argv[i]!.includes("=") ? argv[i]!.split("=")[1]! : argv[i + 1] ?? "";
  if (!text) return [];
  const counts = text.split(",").map((s) => Number(s.trim()));
  if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 16)) throw new Error(`invalid replica counts ${JSON.stringify(text)}: expected e.g. 1,2`);
  return counts;
}

/** A process and its descendants. */
export async function tree(pid: number): Promise<number[]> {
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  const out = [pid];
  for (const c of children.split(" ").filter(Boolean)) out.push(...(await tree(Number(c))));
  return out;
}

/** Resident memory of a process and its descendants, in MiB. */
async function treeRssMiB(pid: number): Promise<number> {
  let total = 0;
  for (const p of await tree(pid)) total += await rssMiB(p).catch(() => 0);
  return total;
}

/** A process and its children (the simulator's workers). */
export async function treeCpuSeconds(pid: number): Promise<number> {
  let total = await cpuSeconds(pid).catch(() => 0);
  const children = await readFile(`/proc/${pid}/task/${pid}/children`, "utf8").catch(() => "");
  for (const c of children.split(" ").filter(Boolean)) total += await treeCpuSeconds(Number(c));
  return total;
}

/** CPU (as a share of one core) and RSS of the coordinator over `seconds`. */
async function window(coordinator: number, sim: number | undefined, seconds: number) {
  const c0 = await treeCpuSeconds(coordinator);
  const s0 = sim ? await treeCpuSeconds(sim) : 0;
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const wall = (performance.now() - t0) / 1000;
  return {
    coordinatorCpu: (await treeCpuSeconds(coordinator) - c0) / wall,
    simCpu: sim ? ((await treeCpuSeconds(sim)) - s0) / wall : 0,
    rssMiB: await treeRssMiB(coordinator),
  };
}

export interface FleetResult {
  devices: number;
  /** Coordinator processes on PostgreSQL (`--replicas`); 0: one process on SQLite. */
  replicas?: number;
  /** Coordinator with no device connected. */
  empty: { cpuCores: number; rssMiB: number };
  enrollSeconds: number;
  /** From `device label set --selector` until every device had the new label. */
  labelFanOutSeconds: number;
  /** CLI wall times in ms: p50 and p99 (the largest, below 100 samples) and failed calls. */
  admin: {
    cliStartup: Latency;
    deviceLsIdle: Latency;
    deviceLsDuringRollout: Latency;
    rolloutShowDuringRollout: Latency;
    /**
     * The admin calls during the rollout that took longer than {@link SLOW_ADMIN_MS}, slowest
     * first (at most 10), with what the CLI said on stderr meanwhile (a retry says why), its
     * FLOTILLA_TIMING marks among it.
     */
    slowDuringRollout?: SlowCall[];
    /**
     * The same admin calls as the coordinator timed them (its "slow calls" log lines during the
     * rollout): the slowest ListDevices and GetRollout, from reaching Connect to the handler's
     * return, with the part before the handler. A CLI call much slower than these lost its time
     * outside the coordinator's handlers (starting up, connecting, a busy machine).
     */
    coordinatorSlowest?: string[];
    /**
     * How long the coordinator took to answer an HTTP/2 PING on an idle connection of the
     * benchmark's own, one after another through the rollout: the wait for a turn of its event
     * loop, which each round trip of an admin call (TLS handshake, request, each 64 KiB of an
     * answer) pays once. Absent in results before 2026-12-03 evening.
     */
    pingDuringRollout?: Latency & { maxMs: number };
  };
  /** Calls of simulated devices that failed while the rollout ran, by kind. */
  simErrorsDuringRollout: Record<string, number>;
  /**
   * The longest the simulator's own event loop was stuck while the rollout ran, in ms (from its
   * status lines): stalls of seconds there make its devices' pings time out, whatever the
   * coordinator does.
   */
  simStallMsDuringRollout?: number;
  idle: { cpuCores: number; rssMiB: number; rssPerDeviceKiB: number; cpuMsPerDevicePerMinute: number; simCpuCores: number };
  rollout: {
    /** Until it completed, or until the deadline when it did not finish (then `finished` is false). */
    wallSeconds: number;
    fanOutSeconds: number;
    coordinatorCpuSeconds: number;
    cpuMsPerDevice: number;
    cpuMsPerDeviceAboveIdle: number;
    finished: boolean;
    healthy: number;
    failed: number;
    /** "shedding load" warnings the coordinator logged during the rollout. */
    shedWarnings: number;
    /** The largest event-loop lag (ms) those warnings gave. */
    maxShedLagMs?: number;
  };
  /** The admin call that failed and ended the run early (its figures after it are NaN). */
  failure?: string;
}

/** Admin calls slower than this are recorded with their stderr. */
const SLOW_ADMIN_MS = 5000;

export interface SlowCall {
  command: string;
  ms: number;
  stderr: string;
}

export interface Latency {
  samples: number;
  p50: number;
  p99: number;
  failed: number;
}

/** p50 and p99 of wall times in ms (p99 is the largest below 100 samples). */
export function latency(ms: number[], failed: number): Latency {
  const sorted = [...ms].sort((a, b) => a - b);
  const at = (q: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!);
  return { samples: sorted.length, p50: at(0.5), p99: at(0.99), failed };
}

/** Runs `call` `n` times one after another (or until `until` says stop); its wall times. */
async function timed(call: () => Promise<{ code: number | null }>, n: number, until?: () => boolean): Promise<Latency> {
  const ms: number[] = [];
  let failed = 0;
  for (let i = 0; i < n && !(until?.() ?? false); i++) {
    const t0 = performance.now();
    const r = await call();
    if (r.code === 0) ms.push(performance.now() - t0);
    else failed++;
  }
  return latency(ms, failed);
}

/**
 * PINGs the coordinator at `url` over an HTTP/2 connection of its own, the next 250 ms after each
 * answer, until `running()` says stop: the round-trip times in ms, and how many pings failed (the
 * connection is opened again after a failure).
 */
export async function pingProbe(url: string, running: () => boolean): Promise<{ ms: number[]; failed: number }> {
  const ms: number[] = [];
  let failed = 0;
  let session: ClientHttp2Session | undefined;
  while (running()) {
    try {
      if (!session || session.destroyed || session.closed) {
        // A measuring client: the coordinator's certificate is the fleet's own, self-signed.
        const opening = http2Connect(url, { rejectUnauthorized: false });
        session = opening;
        opening.on("error", () => {});
        // A ping is only sent on a connected session.
        await new Promise<void>((resolve, reject) => {
          opening.once("connect", () => resolve());
          opening.once("close", () => reject(new Error("closed before it connected")));
        });
      }
      const s = session;
      ms.push(await new Promise<number>((resolve, reject) => {
        const t0 = performance.now();
        const sent = s.ping((err) => (err ? reject(err) : resolve(performance.now() - t0)));
        if (!sent) reject(new Error("ping not sent"));
      }));
    } catch {
      failed++;
      session?.destroy();
      session = undefined;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  session?.destroy();
  return { ms, failed };
}

/** The largest event-loop lag the coordinator's "shedding load" warnings in `output` gave, in ms (0: none). */
export function maxShedLagMs(output: string): number {
  return Math.max(0, ...[...output.matchAll(/shedding load.*?lagMs=(\d+)/g)].map((m) => Number(m[1])));
}

/** The admin methods the benchmark calls, as the coordinator's "slow calls" lines name them. */
const ADMIN_METHODS = ["AdminService/ListDevices", "RolloutService/GetRollout"];

/** The slowest call of each admin method in the coordinator's "slow calls" log lines. */
export function slowestAdminCalls(output: string): string[] {
  const slowest = new Map<string, { ms: number; text: string }>();
  for (const m of output.matchAll(/ slow calls .*?slowest=("(?:[^"\\]|\\.)*"|\S+)/g)) {
    const value = m[1]!.startsWith('"') ? (JSON.parse(m[1]!) as string) : m[1]!;
    for (const part of value.split("; ")) {
      const method = ADMIN_METHODS.find((x) => part.startsWith(`${x} `));
      const ms = Number(/^\S+ (\d+) ms/.exec(part)?.[1] ?? NaN);
      if (method && !((slowest.get(method)?.ms ?? -1) >= ms)) slowest.set(method, { ms, text: part });
    }
  }
  return [...slowest.values()].sort((a, b) => b.ms - a.ms).map((x) => x.text);
}

/** The simulator's call errors by kind, from its last status line. */
function simErrors(output: string): Record<string, number> {
  const lines = output.match(/sim: .* (\d+) call errors(?: \(([^)]*)\))?/g) ?? [];
  const last = lines.at(-1);
  const out: Record<string, number> = {};
  if (!last) return out;
  const m = /(\d+) call errors(?: \(([^)]*)\))?/.exec(last)!;
  out.total = Number(m[1]);
  for (const part of (m[2] ?? "").split(", ").filter(Boolean)) {
    const kv = /^(.*) (\d+)$/.exec(part);
    if (kv) out[kv[1]!] = Number(kv[2]);
  }
  return out;
}

/**
 * Every connected device is a socket of the coordinator's: a fleet near the process's open-file
 * limit cannot connect. As root the benchmark raises the limit of the coordinator (and its replica
 * workers) as a service manager would (`LimitNOFILE=`); otherwise it says why the run may stall.
 */
async function raiseFileLimit(pid: number, devices: number, log: (line: string) => void): Promise<void> {
  const want = devices + 512; // a socket per device, and a few hundred of its own
  const soft = Number(/^Max open files\s+(\d+)/m.exec(await readFile(`/proc/${pid}/limits`, "utf8"))?.[1] ?? 0);
  if (soft >= want) return;
  for (const p of await tree(pid)) {
    const r = spawnSync("prlimit", ["--pid", String(p), `--nofile=${want}:${want}`], { encoding: "utf8" });
    if (r.status !== 0) {
      log(`  warning: the coordinator may open only ${soft} files, fewer than ${devices} devices need (prlimit: ${(r.stderr || r.error?.message || "").trim()})`);
      return;
    }
  }
}

async function measure(devices: number, log: (line: string) => void, replicas = 0): Promise<FleetResult> {
  const sb = new Sandbox();
  try {
    // Production timings, not the tests' fast ones: keep-alives every 15 s.
    const db = replicas > 0 ? ["--database-url", await freshPostgresDatabase(sb), "--replicas", String(replicas)] : [];
    const fleet = await new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000", ...db]).start();
    const coord = fleet.coordinator.child.pid!;
    await raiseFileLimit(coord, devices, log);
    const r = await fleet.admin(["signing-key", "add"]);
    if (r.code !== 0) throw new Error(`signing-key add failed: ${r.stderr}`);
    await publish(fleet, sb, "webapp", "2.0.0");

    log(`  ${devices} devices: measuring the empty coordinator (${IDLE_S} s)`);
    const empty = await window(coord, undefined, IDLE_S);

    const join = await fleet.joinToken(["--auto-approve", "--uses", "0", "--labels", "env=bench"]);
    const enrollStart = performance.now();
    const sim = sb.spawn(["sim", "--join", join, "--devices", String(devices), "--status-interval", "5s", "--seed", "1"], {}, "sim");
    // The simulator's latest status line once a minute, so a long enrollment shows its progress.
    const progress = setInterval(() => log(`    ${sim.stdout.trimEnd().split("\n").at(-1) ?? ""}`), 60_000);
    try {
      await sim.waitForOutput(new RegExp(`sim: all ${devices} devices online`), ENROLL_DEADLINE_MS);
    } catch (err) {
      // A deadline, or the simulator exited: either way, how far it got.
      const last = sim.stdout.trimEnd().split("\n").at(-1) ?? "";
      throw new Error(`not every device online (${err instanceof Error ? err.message : String(err)}); the simulator's last status: ${last.replace(/^sim: /, "")}`);
    } finally {
      clearInterval(progress);
    }
    const enrollSeconds = (performance.now() - enrollStart) / 1000;
    log(`  ${devices} devices: all online after ${enrollSeconds.toFixed(1)} s; measuring idle (${IDLE_S} s)`);
    const idle = await window(coord, sim.child.pid, IDLE_S);

    if (IDLE_ONLY) {
      const code = await sim.stop("SIGTERM");
      if (code !== 0) throw new Error(`the simulator exited ${code}: ${sim.stderr}`);
      return idleOnlyResult(devices, replicas, empty, enrollSeconds, idle);
    }

    log(`  ${devices} devices: admin calls on the idle fleet`);
    const probe = `hostname=sim-${String(Math.floor(devices / 2)).padStart(5, "0")}`;
    const cliStartup = await timed(() => sb.run(["--version"]), 10);
    const deviceLsIdle = await timed(() => fleet.admin(["device", "ls", "--selector", probe]), 10);

    log(`  ${devices} devices: a label change on every device`);
    const l0 = Date.now();
    const labelled = await fleet.admin(["device", "label", "set", "--selector", "env=bench", "--yes", "fanout=1"]);
    // A refused admin call is a finding, not the end of the run: what was measured is kept.
    const partial = (failure: string): FleetResult => {
      log(`  ${devices} devices: ${failure}; the figures measured before it are kept`);
      const result = idleOnlyResult(devices, replicas, empty, enrollSeconds, idle);
      return { ...result, admin: { ...result.admin, cliStartup, deviceLsIdle }, failure };
    };
    if (labelled.code !== 0) return partial(`device label set failed: ${labelled.stderr.trim()}`);
    const labelSeen = await sim.waitForOutput(/sim: all \d+ devices received label fanout=1 \(the last at (\S+)\)/, 10 * 60_000).catch(() => undefined);
    const labelFanOutSeconds = labelSeen ? (Date.parse(labelSeen[1]!) - l0) / 1000 : NaN;

    log(`  ${devices} devices: one-wave rollout`);
    const simBefore = simErrors(sim.stdout);
    const simOutAt = sim.stdout.length;
    const c0 = await treeCpuSeconds(coord);
    const t0 = Date.now();
    const started = await fleet.admin(["rollout", "start", "webapp@2.0.0", "--selector", "env=bench", "--waves", "100%", "--failure-threshold", String(devices), "--json"]);
    if (started.code !== 0) return { ...partial(`rollout start failed: ${started.stderr.trim()}`), labelFanOutSeconds };
    const id = (JSON.parse(started.stdout) as { id: string }).id;
    // Admin calls while it runs: one after another until it ends (at most 200 of each).
    let running = true;
    const pings = pingProbe(fleet.url, () => running);
    const during = (async () => {
      const ls: number[] = [];
      const show: number[] = [];
      let lsFailed = 0;
      let showFailed = 0;
      const slow: SlowCall[] = [];
      const call = async (args: string[]) => {
        const t = performance.now();
        // Each step of the command on its stderr (FLOTILLA_TIMING), kept for the slow ones.
        const r = await fleet.admin(args, { FLOTILLA_TIMING: "1" });
        const ms = performance.now() - t;
        if (ms > SLOW_ADMIN_MS) slow.push({ command: args.slice(0, 2).join(" "), ms: Math.round(ms), stderr: r.stderr.trim().slice(-2000) });
        return { ok: r.code === 0, ms };
      };
      for (let i = 0; i < 200 && running; i++) {
        const a = await call(["device", "ls", "--selector", probe]);
        if (a.ok) ls.push(a.ms);
        else lsFailed++;
        const b = await call(["rollout", "show", id]);
        if (b.ok) show.push(b.ms);
        else showFailed++;
        await new Promise((r) => setTimeout(r, 1000));
      }
      return { ls: latency(ls, lsFailed), show: latency(show, showFailed), slow: slow.sort((x, y) => y.ms - x.ms).slice(0, 10) };
    })();
    // Polls the rollout list (waves' counts, no device rows) until it finished or the deadline.
    const shedBefore = (fleet.coordinator.output.match(/shedding load/g) ?? []).length;
    const coordinatorOutAt = fleet.coordinator.output.length;
    let last: { status: string; waves: { healthy: number; failed: number }[] } | undefined;
    const deadline = Date.now() + ROLLOUT_S * 1000;
    while (Date.now() < deadline) {
      const ls = await fleet.admin(["rollout", "ls", "--json"]);
      if (ls.code === 0) {
        last = (JSON.parse(ls.stdout) as { id: string; status: string; waves: { healthy: number; failed: number }[] }[]).find((x) => x.id === id);
        if (last && last.status !== "running") break;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
    const t1 = Date.now();
    const cpu = (await treeCpuSeconds(coord)) - c0;
    running = false;
    const admin = await during;
    const pinged = await pings;
    // The simulator's status lines are cumulative: the difference is what the rollout saw.
    const simAfter = simErrors(sim.stdout);
    const simErrorsDuringRollout = Object.fromEntries(
      Object.entries(simAfter).map(([k, v]) => [k, v - (simBefore[k] ?? 0)]).filter(([, v]) => (v as number) > 0),
    );
    const finished = last !== undefined && last.status !== "running";
    const healthy = last?.waves.reduce((n, w) => n + w.healthy, 0) ?? 0;
    const failed = last?.waves.reduce((n, w) => n + w.failed, 0) ?? 0;
    const shed = (fleet.coordinator.output.match(/shedding load/g) ?? []).length - shedBefore;
    const received = await sim.waitForOutput(/sim: all \d+ devices received \S+ \(the last at (\S+)\)/, 60_000).catch(() => undefined);
    const wallSeconds = (t1 - t0) / 1000;
    const result: FleetResult = {
      devices,
      replicas,
      empty: { cpuCores: empty.coordinatorCpu, rssMiB: empty.rssMiB },
      enrollSeconds,
      labelFanOutSeconds,
      admin: {
        cliStartup,
        deviceLsIdle,
        deviceLsDuringRollout: admin.ls,
        rolloutShowDuringRollout: admin.show,
        slowDuringRollout: admin.slow,
        coordinatorSlowest: slowestAdminCalls(fleet.coordinator.output.slice(coordinatorOutAt)),
        pingDuringRollout: { ...latency(pinged.ms, pinged.failed), maxMs: Math.max(0, ...pinged.ms) },
      },
      simErrorsDuringRollout,
      simStallMsDuringRollout: Math.max(0, ...[...sim.stdout.slice(simOutAt).matchAll(/simulator stalled up to (\d+) ms/g)].map((m) => Number(m[1]))),
      idle: idleFigures(devices, empty, idle),
      rollout: {
        wallSeconds,
        fanOutSeconds: received ? (Date.parse(received[1]!) - t0) / 1000 : NaN,
        coordinatorCpuSeconds: cpu,
        cpuMsPerDevice: (cpu * 1000) / devices,
        cpuMsPerDeviceAboveIdle: ((cpu - idle.coordinatorCpu * wallSeconds) * 1000) / devices,
        finished,
        healthy,
        failed,
        shedWarnings: shed,
        maxShedLagMs: maxShedLagMs(fleet.coordinator.output.slice(coordinatorOutAt)),
      },
    };
    const code = await sim.stop("SIGTERM");
    if (code !== 0) throw new Error(`the simulator exited ${code}: ${sim.stderr}`);
    return result;
  } finally {
    await sb.cleanup();
  }
}

/** The idle figures of a result: the window with devices beside the one without. */
function idleFigures(devices: number, empty: { coordinatorCpu: number; rssMiB: number }, idle: { coordinatorCpu: number; rssMiB: number; simCpu: number }): FleetResult["idle"] {
  return {
    cpuCores: idle.coordinatorCpu,
    rssMiB: idle.rssMiB,
    rssPerDeviceKiB: ((idle.rssMiB - empty.rssMiB) * 1024) / devices,
    cpuMsPerDevicePerMinute: ((idle.coordinatorCpu - empty.coordinatorCpu) * 60_000) / devices,
    simCpuCores: idle.simCpu,
  };
}

/** A result with the idle figures only (`--idle-only`): the rest is NaN, printed as "-". */
function idleOnlyResult(
  devices: number,
  replicas: number,
  empty: { coordinatorCpu: number; rssMiB: number },
  enrollSeconds: number,
  idle: { coordinatorCpu: number; rssMiB: number; simCpu: number },
): FleetResult {
  const none: Latency = { samples: 0, p50: NaN, p99: NaN, failed: 0 };
  return {
    devices,
    replicas,
    empty: { cpuCores: empty.coordinatorCpu, rssMiB: empty.rssMiB },
    enrollSeconds,
    labelFanOutSeconds: NaN,
    admin: { cliStartup: none, deviceLsIdle: none, deviceLsDuringRollout: none, rolloutShowDuringRollout: none },
    simErrorsDuringRollout: {},
    idle: idleFigures(devices, empty, idle),
    rollout: { wallSeconds: NaN, fanOutSeconds: NaN, coordinatorCpuSeconds: NaN, cpuMsPerDevice: NaN, cpuMsPerDeviceAboveIdle: NaN, finished: false, healthy: 0, failed: 0, shedWarnings: 0 },
  };
}

const f = (n: number, digits = 1) => (Number.isNaN(n) ? "-" : n.toFixed(digits));

/** The table of results, one column per fleet size, and the growth factor from the first to the last. */
export function fleetTable(results: FleetResult[]): string[] {
  const first = results[0]!;
  const last = results[results.length - 1]!;
  const growth =
    results.length < 2 ? "" : last.devices === first.devices ? `${last.replicas} proc / ${first.replicas} proc` : `x${last.devices / first.devices} devices`;
  const rows: [string, (r: FleetResult) => number, number][] = [
    ["empty coordinator CPU (cores)", (r) => r.empty.cpuCores, 3],
    ["empty coordinator RSS (MiB)", (r) => r.empty.rssMiB, 0],
    ["enroll + connect all (s)", (r) => r.enrollSeconds, 1],
    ["idle: coordinator CPU (cores)", (r) => r.idle.cpuCores, 3],
    ["idle: CPU ms per device per minute", (r) => r.idle.cpuMsPerDevicePerMinute, 1],
    ["idle: coordinator RSS (MiB)", (r) => r.idle.rssMiB, 0],
    ["idle: RSS per device (KiB)", (r) => r.idle.rssPerDeviceKiB, 1],
    ["idle: simulator CPU (cores)", (r) => r.idle.simCpuCores, 3],
    ["label change: fan-out to all devices (s)", (r) => r.labelFanOutSeconds, 2],
    ["rollout: wall time (s)", (r) => r.rollout.wallSeconds, 1],
    ["rollout: fan-out to all devices (s)", (r) => r.rollout.fanOutSeconds, 2],
    ["rollout: coordinator CPU (s)", (r) => r.rollout.coordinatorCpuSeconds, 1],
    ["rollout: CPU ms per device", (r) => r.rollout.cpuMsPerDevice, 1],
    ["rollout: CPU ms per device above idle", (r) => r.rollout.cpuMsPerDeviceAboveIdle, 1],
    ["admin: CLI start, no call, p99 (ms)", (r) => r.admin.cliStartup.p99, 0],
    ["admin: device ls --selector idle p99 (ms)", (r) => r.admin.deviceLsIdle.p99, 0],
    ["admin: device ls --selector in rollout p50 (ms)", (r) => r.admin.deviceLsDuringRollout.p50, 0],
    ["admin: device ls --selector in rollout p99 (ms)", (r) => r.admin.deviceLsDuringRollout.p99, 0],
    ["admin: rollout show in rollout p50 (ms)", (r) => r.admin.rolloutShowDuringRollout.p50, 0],
    ["admin: rollout show in rollout p99 (ms)", (r) => r.admin.rolloutShowDuringRollout.p99, 0],
    ["admin: calls failed in rollout", (r) => r.admin.deviceLsDuringRollout.failed + r.admin.rolloutShowDuringRollout.failed, 0],
    ["coordinator: PING answered in rollout p50 (ms)", (r) => r.admin.pingDuringRollout?.p50 ?? NaN, 0],
    ["coordinator: PING answered in rollout p99 (ms)", (r) => r.admin.pingDuringRollout?.p99 ?? NaN, 0],
    ["coordinator: PING answered in rollout, slowest (ms)", (r) => r.admin.pingDuringRollout?.maxMs ?? NaN, 0],
    ["coordinator: largest lag it shed load at (ms)", (r) => r.rollout.maxShedLagMs ?? NaN, 0],
    ["sim: device call errors in rollout", (r) => r.simErrorsDuringRollout.total ?? 0, 0],
    ["sim: longest simulator stall in rollout (ms)", (r) => r.simStallMsDuringRollout ?? NaN, 0],
  ];
  const column = (r: FleetResult) => (r.replicas ? `${r.devices} devices, ${r.replicas} proc (PG)` : `${r.devices} devices`);
  const head = ["", ...results.map(column), ...(growth ? [`growth (${growth})`] : [])];
  const body = rows.map(([name, get, d]) => [name, ...results.map((r) => f(get(r), d)), ...(growth ? [get(first) === 0 ? "-" : f(get(last) / get(first), 2)] : [])]);
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((row) => row[i]!.length)));
  const line = (row: string[]) => `  ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")}`;
  return [line(head), ...body.map(line)];
}

/** Runs the fleet benchmark for each size, printing a table and writing JSON. */
export async function benchFleet(print: (line: string) => void): Promise<void> {
  const sizes = fleetSizes();
  const replicas = replicaCounts();
  const where = replicas.length > 0 ? `PostgreSQL, ${replicas.join(" then ")} coordinator process(es)` : "SQLite";
  print(`fleet scale: coordinator (${where}, keep-alive 15 s) with flotilla sim (metrics sampled every 10 s and shipped every 60 s, logs every 30 s, step delay 50 ms), sizes ${sizes.join(", ")}`);
  const results: FleetResult[] = [];
  const failed: { devices: number; replicas: number; error: string }[] = [];
  // A size that fails (a deadline, a refused call) is reported and recorded, and the sizes
  // measured still print.
  const attempt = async (n: number, r?: number) => {
    try {
      results.push(await measure(n, print, r));
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      failed.push({ devices: n, replicas: r ?? 0, error });
      print(`  ${n} devices${r ? `, ${r} processes` : ""}: FAILED: ${error}`);
    }
  };
  for (const n of sizes) {
    if (replicas.length === 0) await attempt(n);
    for (const r of replicas) await attempt(n, r);
  }
  if (results.length === 0) {
    await writeResult("fleet", { idleWindowSeconds: IDLE_S, results, failed });
    throw new Error("no fleet size was measured");
  }
  for (const line of fleetTable(results)) print(line);
  for (const r of results) {
    if (r.failure) print(`  ${r.devices} devices: ended early: ${r.failure}`);
    if (Number.isNaN(r.rollout.wallSeconds)) continue; // --idle-only, or ended early
    const how = r.rollout.finished ? "finished" : `did NOT finish within ${r.rollout.wallSeconds.toFixed(0)} s`;
    print(`  ${r.devices} devices: rollout ${how}: ${r.rollout.healthy} healthy, ${r.rollout.failed} failed; coordinator shed load ${r.rollout.shedWarnings} times`);
    const errs = Object.entries(r.simErrorsDuringRollout).filter(([k]) => k !== "total");
    if (errs.length > 0) print(`  ${r.devices} devices: simulated device call errors during the rollout (top kinds): ${errs.map(([k, v]) => `${k} ${v}`).join(", ")}`);
    for (const c of r.admin.slowDuringRollout?.slice(0, 3) ?? []) {
      const lines = c.stderr.split("\n").filter(Boolean);
      // FLOTILLA_TIMING's marks, in ms since the CLI started, apart from what else it said.
      const steps = lines.map((l) => /^flotilla timing: (\d+) ms (.*)$/.exec(l)).filter((m) => m !== null).map((m) => `${m[1]} ${m[2]}`);
      const other = lines.filter((l) => !l.startsWith("flotilla timing: "));
      const said = other.length > 0 ? other.slice(-3).join(" | ") : "nothing else on stderr";
      print(`  ${r.devices} devices: slow admin call in the rollout: ${c.command} ${c.ms} ms; steps (ms since its start): ${steps.join(", ") || "none marked"}; the CLI said: ${said}`);
    }
    for (const c of r.admin.coordinatorSlowest ?? []) print(`  ${r.devices} devices: the coordinator's slowest in the rollout: ${c}`);
  }
  const file = await writeResult("fleet", { idleWindowSeconds: IDLE_S, results, ...(failed.length > 0 ? { failed } : {}) });
  print(`  written to ${file}`);
  // Every target's figure in one place: this run's, and the newest of the other benchmarks.
  print("");
  // The figures of this run are written: a result file the table cannot read does not undo that.
  await benchTargets(print).catch((err: unknown) => print(`  the targets table could not be made: ${err instanceof Error ? err.message : String(err)}`));
}

// Runnable on its own as well: `npx tsx bench/fleet.ts --devices 200`.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchFleet((line) => process.stdout.write(`${line}\n`));
