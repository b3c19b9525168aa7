/**
 * Capacity per core: how many agent `Report` calls per second one coordinator process answers
 * with a fixed CPU budget, against `coordinator --replicas 2` with the same budget for each
 * replica: what a machine with one more core gives. The budget is a cgroup (v1 cpu controller,
 * CFS quota) per coordinator process, so the simulator and PostgreSQL, which run outside it, do
 * not eat the second replica's core as they do in `npm run bench -- fleet --replicas 1,2`.
 *
 * For 1 and then 2 replicas, each on a fresh PostgreSQL database (FLOTILLA_TEST_POSTGRES_URL):
 *   (a) the coordinator starts; each process goes into its own cgroup of CORES cores (the
 *       cluster primary, which only accepts connections and hands them on, shares replica 1's),
 *       and the simulators and this database's PostgreSQL backends into one of LOAD_CORES; each
 *       cgroup is a cap and, with the largest cpu.shares, a reservation on a busy machine;
 *   (b) `flotilla sim` connects DEVICES idle devices (production keep-alive); idle CPU per device
 *       over IDLE_S seconds, beside the empty coordinator measured before;
 *   (c) a second `flotilla sim` of CONCURRENCY devices reports back to back (closed loop, as in
 *       bench/report.ts); calls/s and p50/p99 over one whole window of WINDOW seconds, with the
 *       CPU each process used, how often its budget throttled it, and which process serves how
 *       many device sessions.
 *
 *   FLOTILLA_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test npm run bench -- capacity
 *   BENCH_CAPACITY_CORES=0.4 BENCH_CAPACITY_DEVICES=1000 BENCH_CAPACITY_CONCURRENCY=64 BENCH_CAPACITY_WINDOW_S=20
 *   BENCH_CAPACITY_LOAD_CORES=1.2 BENCH_CAPACITY_IDLE_S=10
 *
 * Needs root with cgroup v1's cpu controller at /sys/fs/cgroup/cpu; otherwise it prints a
 * "skipped: ..." line. Asserts nothing about speed; every wait has a deadline, and the processes
 * and cgroups are removed at the end, also on failure.
 */
import { mkdir, readdir, readFile, readlink, rmdir, writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import type { Proc } from "@flotilla/protocol/testing";
import { waitFor } from "@flotilla/protocol/testing";
import { cpuSeconds, tree, treeCpuSeconds } from "./fleet.ts";
import { reportWindow, startReporting, type ReportWindow } from "./report.ts";
import { Fleet, freshPostgresDatabase } from "../test/e2e/support/fleet.ts";
import { Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

const CORES = Number(process.env.BENCH_CAPACITY_CORES ?? 0.4);
const DEVICES = Number(process.env.BENCH_CAPACITY_DEVICES ?? 1000);
/**
 * Calls in flight: enough to keep two budgets busy, few enough that one process is not driven
 * into shedding load (200 on 0.4 cores is: it then spends its budget refusing calls).
 */
const CONCURRENCY = Number(process.env.BENCH_CAPACITY_CONCURRENCY ?? 64);
const WINDOW_S = Number(process.env.BENCH_CAPACITY_WINDOW_S ?? 20);
const IDLE_S = Number(process.env.BENCH_CAPACITY_IDLE_S ?? 10);
/**
 * Reserved for the load, the simulators and PostgreSQL's backends for this run's database: by
 * default what two budgets leave of the machine (1.2 of 2 cores), so it is not the bottleneck.
 */
const LOAD_CORES = Number(process.env.BENCH_CAPACITY_LOAD_CORES ?? Math.max(0.5, availableParallelism() - 2 * CORES));
const CPU_ROOT = "/sys/fs/cgroup/cpu";
const PERIOD_US = 100_000;

/**
 * The largest cpu.shares: the machine is shared, and a cgroup of default weight would get a
 * slice of a core beside a dozen busy processes of other work, so a budget would be a cap but
 * not a reservation. With this weight its processes get their quota first, and no more.
 */
const RESERVED_SHARES = 262_144;

/** A cgroup (v1, cpu controller) limiting its processes to `cores` cores together, and reserving them. */
class CpuBudget {
  private constructor(readonly dir: string) {}

  static async create(name: string, cores: number): Promise<CpuBudget> {
    const dir = join(CPU_ROOT, name);
    await mkdir(dir);
    const b = new CpuBudget(dir);
    try {
      await writeFile(join(dir, "cpu.cfs_period_us"), String(PERIOD_US));
      await writeFile(join(dir, "cpu.cfs_quota_us"), String(Math.round(cores * PERIOD_US)));
      await writeFile(join(dir, "cpu.shares"), String(RESERVED_SHARES));
    } catch (e) {
      await b.remove();
      throw e;
    }
    return b;
  }

  /** Moves a process (all its threads) into this cgroup; its children started later follow. */
  async add(pid: number): Promise<void> {
    await writeFile(join(this.dir, "cgroup.procs"), String(pid));
  }

  async pids(): Promise<number[]> {
    return (await readFile(join(this.dir, "cgroup.procs"), "utf8").catch(() => "")).split("\n").filter(Boolean).map(Number);
  }

  /** Periods elapsed, periods in which the quota ran out, and the time spent throttled. */
  async stat(): Promise<{ periods: number; throttled: number; throttledSeconds: number }> {
    const text = await readFile(join(this.dir, "cpu.stat"), "utf8");
    const get = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, "m").exec(text)?.[1] ?? 0);
    return { periods: get("nr_periods"), throttled: get("nr_throttled"), throttledSeconds: get("throttled_time") / 1e9 };
  }

  /** Hands any process still inside back to the root cgroup, then removes the cgroup. */
  async remove(): Promise<void> {
    await waitFor(
      `cgroup ${this.dir} to be removed`,
      async () => {
        for (const pid of await this.pids()) await writeFile(join(CPU_ROOT, "cgroup.procs"), String(pid)).catch(() => {});
        try {
          await rmdir(this.dir);
          return true;
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === "ENOENT") return true;
          return undefined;
        }
      },
      10_000,
    );
  }
}

/** Why budgets cannot be set on this machine, or undefined when they can. */
async function cannotBudget(): Promise<string | undefined> {
  if (!process.env.FLOTILLA_TEST_POSTGRES_URL) return "FLOTILLA_TEST_POSTGRES_URL is not set (replicas need PostgreSQL)";
  const quota = await readFile(join(CPU_ROOT, "cpu.cfs_quota_us"), "utf8").catch(() => undefined);
  if (quota === undefined) {
    const unified = await readFile("/sys/fs/cgroup/cgroup.controllers", "utf8").then(() => true, () => false);
    return unified
      ? "cgroup v2 (unified hierarchy) only; this benchmark sets budgets with cgroup v1's cpu controller at /sys/fs/cgroup/cpu"
      : "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu";
  }
  try {
    const probe = await CpuBudget.create(`flotilla-capacity-probe-${process.pid}`, 1);
    await probe.remove();
  } catch (e) {
    return `cannot create a cgroup under ${CPU_ROOT} (${(e as NodeJS.ErrnoException).code ?? String(e)}): run as root`;
  }
  return undefined;
}

interface Conn {
  localPort: number;
  remotePort: number;
  inode: string;
}

/** Established TCP connections on this host (loopback included), from /proc/net. */
async function connections(): Promise<Conn[]> {
  const out: Conn[] = [];
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of (await readFile(f, "utf8").catch(() => "")).split("\n").slice(1)) {
      const c = line.trim().split(/\s+/);
      if (c.length < 10 || c[3] !== "01") continue; // 01: ESTABLISHED
      out.push({ localPort: parseInt(c[1]!.split(":")[1]!, 16), remotePort: parseInt(c[2]!.split(":")[1]!, 16), inode: c[9]! });
    }
  }
  return out;
}

/** Socket inodes a process holds open. */
async function sockets(pid: number): Promise<Set<string>> {
  const out = new Set<string>();
  for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
    const m = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ""));
    if (m) out.add(m[1]!);
  }
  return out;
}

/** Device sessions each coordinator process serves on `port`: all, and those of the reporting simulator. */
async function sessions(pids: number[], port: number, hotPids: number[]): Promise<{ all: number; hot: number }[]> {
  const conns = await connections();
  const hotSockets = new Set<string>();
  for (const p of hotPids) for (const s of await sockets(p)) hotSockets.add(s);
  const hotPorts = new Set(conns.filter((c) => c.remotePort === port && hotSockets.has(c.inode)).map((c) => c.localPort));
  const out: { all: number; hot: number }[] = [];
  for (const pid of pids) {
    const mine = await sockets(pid);
    const served = conns.filter((c) => c.localPort === port && mine.has(c.inode));
    out.push({ all: served.length, hot: served.filter((c) => hotPorts.has(c.remotePort)).length });
  }
  return out;
}

/** Idle CPU time of the whole machine in seconds (all cores), from /proc/stat. */
async function machineIdleSeconds(): Promise<number> {
  const f = (await readFile("/proc/stat", "utf8")).split("\n")[0]!.trim().split(/\s+/);
  return (Number(f[4]) + Number(f[5])) / 100; // idle + iowait, in USER_HZ
}

/** CPU seconds of PostgreSQL's processes (all of them: the server is shared). */
async function postgresCpuSeconds(): Promise<number> {
  let total = 0;
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const comm = (await readFile(`/proc/${pid}/comm`, "utf8").catch(() => "")).trim();
    if (comm === "postgres") total += await cpuSeconds(Number(pid)).catch(() => 0);
  }
  return total;
}

/**
 * PostgreSQL's backend processes serving database `name` (this run's own: the server is
 * shared, and only these work for this benchmark).
 */
async function postgresBackends(name: string): Promise<number[]> {
  const out: number[] = [];
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).replace(/\0/g, " ");
    if (cmd.startsWith("postgres: ") && cmd.includes(` ${name} `)) out.push(Number(pid));
  }
  return out;
}

/** Stops a process, SIGKILL if it has not exited within `ms`. */
async function stopWithin(p: Proc, ms = 15_000): Promise<void> {
  const killer = setTimeout(() => p.child.kill("SIGKILL"), ms);
  await p.stop("SIGTERM");
  clearTimeout(killer);
}

export interface CapacityProcess {
  role: "coordinator" | "primary" | "replica";
  pid: number;
  /** CPU used in the reporting window, in cores. */
  cpuCores: number;
  /** Share of CFS periods in the window in which its cgroup's quota ran out. */
  throttledShare: number;
  sessions: number;
  reportingSessions: number;
}

export interface CapacityResult {
  replicas: number;
  coresPerProcess: number;
  enrollSeconds: number;
  empty: { cpuCores: number };
  idle: { cpuCores: number; cpuMsPerDevicePerMinute: number };
  report: ReportWindow;
  processes: CapacityProcess[];
  /**
   * In the reporting window, outside the budgets: how often the load's reservation (simulators
   * and this database's PostgreSQL backends) ran out, the reporting simulator's CPU, PostgreSQL's
   * (the whole server), and the machine's idle cores.
   */
  outside: { loadThrottledShare: number; reportingSimCpuCores: number; postgresCpuCores: number; machineIdleCores: number };
}

/** One coordinator setup: `replicas` processes (1: no cluster), each in a budget of CORES. */
async function measure(replicas: number, log: (line: string) => void): Promise<CapacityResult> {
  const sb = new Sandbox();
  const budgets: CpuBudget[] = [];
  let load: CpuBudget | undefined;
  const pids: number[] = [];
  try {
    const url = await freshPostgresDatabase(sb);
    const database = new URL(url).pathname.slice(1);
    const db = ["--database-url", url, "--replicas", String(replicas)];
    // The load (both simulators and PostgreSQL's backends for this database) gets a reserved
    // LOAD_CORES beside the budgets, so other work on the machine does not starve it either.
    load = await CpuBudget.create(`flotilla-capacity-${process.pid}-${replicas}-load`, LOAD_CORES);
    const loadUp = async (...procs: Proc[]) => {
      const pids = [...(await postgresBackends(database)), ...(await Promise.all(procs.map((p) => tree(p.child.pid!)))).flat()];
      for (const pid of pids) await load!.add(pid).catch(() => {}); // one may have exited meanwhile
    };
    const fleet = new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000", ...db]);
    await fleet.prepare();
    const coord = await fleet.startCoordinator();
    const primary = coord.child.pid!;
    // Each worker prints its pid once it listens; with one replica, the process itself serves.
    let workers = [primary];
    if (replicas > 1) {
      const re = /listening on \S+ \(replica \d+ of \d+, pid (\d+)\)/g;
      await waitFor(`${replicas} replicas to listen`, () => ([...coord.output.matchAll(re)].length >= replicas ? true : undefined), 60_000);
      workers = [...coord.output.matchAll(re)].map((m) => Number(m[1]));
      const children = await tree(primary);
      if (workers.some((w) => !children.includes(w))) throw new Error(`replica pids ${workers.join(", ")} are not all children of the primary ${primary}`);
    }
    pids.push(...workers);
    for (const [i, pid] of workers.entries()) {
      const b = await CpuBudget.create(`flotilla-capacity-${process.pid}-${replicas}-${i + 1}`, CORES);
      budgets.push(b);
      await b.add(pid);
    }
    // The primary accepts connections and hands them on; it shares replica 1's budget, so the
    // two replicas get no CPU beyond 2 x CORES.
    if (replicas > 1) await budgets[0]!.add(primary);
    await fleet.loginAsOwner();

    const all = replicas > 1 ? [primary, ...workers] : workers;
    const cpu = async () => Promise.all(all.map((p) => cpuSeconds(p)));
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    let c0 = sum(await cpu());
    let t0 = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const empty = (sum(await cpu()) - c0) / ((performance.now() - t0) / 1000);

    log(`  ${replicas} replica(s): ${DEVICES} idle devices enrolling`);
    const join = await fleet.joinToken(["--auto-approve", "--uses", "0", "--labels", "env=bench"]);
    const e0 = performance.now();
    const idleSim = sb.spawn(["sim", "--join", join, "--devices", String(DEVICES), "--status-interval", "0", "--seed", "1"], {}, "sim idle");
    await loadUp(idleSim);
    await idleSim.waitForOutput(new RegExp(`sim: all ${DEVICES} devices online`), 30 * 60_000);
    const enrollSeconds = (performance.now() - e0) / 1000;
    log(`  ${replicas} replica(s): all online after ${enrollSeconds.toFixed(1)} s; idle for ${IDLE_S} s`);
    c0 = sum(await cpu());
    t0 = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_S * 1000));
    const idle = (sum(await cpu()) - c0) / ((performance.now() - t0) / 1000);

    log(`  ${replicas} replica(s): ${CONCURRENCY} devices reporting back to back; a ${WINDOW_S} s window`);
    const hot = startReporting(sb, join, CONCURRENCY, WINDOW_S);
    await loadUp(idleSim, hot);
    await hot.waitForOutput(new RegExp(`sim: all ${CONCURRENCY} devices online`), 10 * 60_000);
    await loadUp(idleSim, hot); // the simulator's workers, and PostgreSQL backends opened meanwhile
    // Sampled over the same whole window the simulator reports: from its next status line on.
    const statusLines = () => (hot.stdout.match(/ reports in /g) ?? []).length;
    const before = statusLines();
    await waitFor("the reporting simulator's next status line", () => (statusLines() > before ? true : undefined), (WINDOW_S + 30) * 1000);
    const w0 = { cpu: await cpu(), sim: await treeCpuSeconds(hot.child.pid!), pg: await postgresCpuSeconds(), idle: await machineIdleSeconds(), stat: await Promise.all(budgets.map((b) => b.stat())), load: await load.stat(), t: performance.now() };
    const report = await reportWindow(hot, CONCURRENCY, WINDOW_S);
    const w1 = { cpu: await cpu(), sim: await treeCpuSeconds(hot.child.pid!), pg: await postgresCpuSeconds(), idle: await machineIdleSeconds(), stat: await Promise.all(budgets.map((b) => b.stat())), load: await load.stat(), t: performance.now() };
    const wall = (w1.t - w0.t) / 1000;
    const served = await sessions(all, fleet.port, await tree(hot.child.pid!));
    const budgetOf = (i: number) => (replicas > 1 ? Math.max(0, i - 1) : i);
    const processes: CapacityProcess[] = all.map((pid, i) => {
      const b = budgetOf(i);
      const periods = w1.stat[b]!.periods - w0.stat[b]!.periods;
      return {
        role: replicas === 1 ? "coordinator" : i === 0 ? "primary" : "replica",
        pid,
        cpuCores: (w1.cpu[i]! - w0.cpu[i]!) / wall,
        throttledShare: periods === 0 ? 0 : (w1.stat[b]!.throttled - w0.stat[b]!.throttled) / periods,
        sessions: served[i]!.all,
        reportingSessions: served[i]!.hot,
      };
    });
    // A replica started again by the primary would have left its budget: the figures would lie.
    const now = replicas > 1 ? (await tree(primary)).filter((p) => p !== primary) : [primary];
    if (workers.some((p) => !now.includes(p))) throw new Error(`a replica exited during the run:\n${coord.output.slice(-2000)}`);
    const result: CapacityResult = {
      replicas,
      coresPerProcess: CORES,
      enrollSeconds,
      empty: { cpuCores: empty },
      idle: { cpuCores: idle, cpuMsPerDevicePerMinute: ((idle - empty) * 60_000) / DEVICES },
      report,
      processes,
      outside: {
        loadThrottledShare: (w1.load.throttled - w0.load.throttled) / Math.max(1, w1.load.periods - w0.load.periods),
        reportingSimCpuCores: (w1.sim - w0.sim) / wall, postgresCpuCores: (w1.pg - w0.pg) / wall, machineIdleCores: (w1.idle - w0.idle) / wall },
    };
    await stopWithin(hot);
    await stopWithin(idleSim);
    await stopWithin(coord);
    return result;
  } finally {
    try {
      await sb.cleanup();
    } finally {
      // Workers outlive a killed primary for a moment; they are ours, by pid.
      for (const pid of pids) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
      for (const b of [...budgets, ...(load ? [load] : [])]) await b.remove().catch((e: unknown) => log(`  could not remove ${b.dir}: ${String(e)}`));
    }
  }
}

const f = (n: number, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

/** The table: one column per setup, and the ratio of the last to the first. */
export function capacityTable(results: CapacityResult[]): string[] {
  const [a, b] = [results[0]!, results[results.length - 1]!];
  const perProcess = (r: CapacityResult, get: (p: CapacityProcess) => number, d: number) =>
    r.processes.filter((p) => p.role !== "primary").map((p) => f(get(p), d)).join(" / ");
  const rows: [string, (r: CapacityResult) => string][] = [
    ["budget per process (cores)", (r) => f(r.coresPerProcess, 2)],
    ["Report calls/s", (r) => f(r.report.callsPerSecond)],
    ["Report p50 (ms, bucket bound)", (r) => `< ${r.report.p50Ms}`],
    ["Report p99 (ms, bucket bound)", (r) => `< ${r.report.p99Ms}`],
    ["Report call errors", (r) => r.report.errors],
    ["CPU per replica in window (cores)", (r) => perProcess(r, (p) => p.cpuCores, 2)],
    ["cluster primary CPU in window (cores)", (r) => f(r.processes.find((p) => p.role === "primary")?.cpuCores ?? NaN, 3)],
    ["periods throttled per replica (%)", (r) => perProcess(r, (p) => p.throttledShare * 100, 0)],
    ["device sessions per replica", (r) => perProcess(r, (p) => p.sessions, 0)],
    ["reporting sessions per replica", (r) => perProcess(r, (p) => p.reportingSessions, 0)],
    [`load (${f(LOAD_CORES, 2)} cores reserved): periods throttled (%)`, (r) => f(r.outside.loadThrottledShare * 100, 0)],
    ["outside: reporting sim CPU (cores)", (r) => f(r.outside.reportingSimCpuCores, 2)],
    ["outside: PostgreSQL CPU (cores)", (r) => f(r.outside.postgresCpuCores, 2)],
    ["outside: machine idle (cores)", (r) => f(r.outside.machineIdleCores, 2)],
    [`enroll ${DEVICES} idle devices (s)`, (r) => f(r.enrollSeconds, 1)],
    ["idle: coordinator CPU (cores)", (r) => f(r.idle.cpuCores, 3)],
    ["idle: CPU ms per device per minute", (r) => f(r.idle.cpuMsPerDevicePerMinute, 1)],
  ];
  const head = ["", ...results.map((r) => `${r.replicas} ${r.replicas === 1 ? "process" : "replicas"}`), ...(results.length > 1 ? ["ratio"] : [])];
  const ratio = (name: string) => {
    if (results.length < 2) return [];
    if (name === "Report calls/s") return [f(b.report.callsPerSecond / a.report.callsPerSecond, 2)];
    if (name === "idle: coordinator CPU (cores)") return [f(b.idle.cpuCores / a.idle.cpuCores, 2)];
    return [""];
  };
  const body = rows.map(([name, get]) => [name, ...results.map(get), ...ratio(name)]);
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((row) => row[i]!.length)));
  const line = (row: string[]) => `  ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ")}`;
  return [line(head), ...body.map(line)];
}

export async function benchCapacity(print: (line: string) => void): Promise<void> {
  const why = await cannotBudget();
  if (why) {
    print(`capacity: skipped: ${why}`);
    return;
  }
  print(
    `capacity: agent Report calls, ${CONCURRENCY} in flight (closed loop) for ${WINDOW_S} s, ${DEVICES} idle devices connected; ` +
      `each coordinator process limited to ${CORES} cores (cgroup), the simulators and PostgreSQL's backends to ${f(LOAD_CORES, 2)} outside that`,
  );
  const results: CapacityResult[] = [];
  for (const n of [1, 2]) results.push(await measure(n, print));
  for (const line of capacityTable(results)) print(line);
  const file = await writeResult("capacity", { cores: CORES, devices: DEVICES, concurrency: CONCURRENCY, windowSeconds: WINDOW_S, idleWindowSeconds: IDLE_S, results });
  print(`  written to ${file}`);
}
