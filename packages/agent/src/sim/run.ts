/**
 * `flotilla sim`: a simulated fleet spread over worker processes (each runs a slice of the
 * devices), so the simulator is not the bottleneck. The parent sums the workers' counts and
 * prints what happened: all devices online, every device received a release, a release
 * installed everywhere, and a status line now and then.
 */
import type { ChildProcess } from "node:child_process";
import { onAbort, parseJoinString } from "@flotilla/protocol/agent";
import { bucketQuantile, SimSlice, type SimOptions, type SliceStats } from "./slice.ts";

/** What a worker process is given (as JSON in its environment). */
export interface WorkerPayload {
  opts: SimOptions;
  from: number;
  to: number;
}

/** The environment variable that makes a `flotilla sim` process a worker. */
export const SIM_WORKER_ENV = "FLOTILLA_SIM_WORKER";

const REPORT_MS = 250;
const LAG_TICK_MS = 20;

/** Runs one slice until `signal`, sending its counts through `send` every REPORT_MS. */
export async function runSlice(payload: WorkerPayload, signal: AbortSignal, send: (stats: SliceStats) => void): Promise<void> {
  const slice = new SimSlice(payload.opts, payload.from, payload.to);
  // The longest gap between two ticks of a fast timer: how long the event loop was stuck. The
  // gap still open when the counts are sent counts too (that timer may not have run yet).
  let lastTick = performance.now();
  let longest = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - lastTick);
    lastTick = now;
  }, LAG_TICK_MS);
  const timer = setInterval(() => {
    const lagMs = Math.max(0, Math.max(longest, performance.now() - lastTick) - LAG_TICK_MS);
    longest = 0;
    send({ ...slice.snapshot(), lagMs: Math.round(lagMs) });
  }, REPORT_MS);
  try {
    await Promise.all([slice.start(signal), slice.churn(signal)]);
    if (!signal.aborted) await new Promise<void>((r) => signal.addEventListener("abort", () => r()));
  } finally {
    clearInterval(timer);
    clearInterval(ticker);
    await slice.stop();
    send(slice.snapshot());
  }
}

/** Runs this process as a worker: its slice is in the environment; the parent's IPC channel carries the counts. */
export async function runSimWorker(payloadJson: string, signal: AbortSignal): Promise<void> {
  const payload = JSON.parse(payloadJson) as WorkerPayload;
  const stop = new AbortController();
  onAbort(signal, () => stop.abort());
  // The parent gone (even killed): stop too, nothing outlives it; at the latest 10 s later.
  process.once("disconnect", () => {
    stop.abort();
    setTimeout(() => process.exit(1), 10_000).unref();
  });
  let last: SliceStats | undefined;
  await runSlice(payload, stop.signal, (stats) => {
    last = stats;
    if (process.connected) process.send?.({ stats });
  });
  // The final counts reach the parent before the worker exits.
  await new Promise<void>((resolve) => (process.connected && process.send ? process.send({ stats: last }, () => resolve()) : resolve()));
}

function sum(parts: SliceStats[]): SliceStats {
  const total: SliceStats = { enrolled: 0, online: 0, installing: 0, healthy: 0, failed: 0, errors: 0, errorKinds: {}, received: {}, installed: {}, reports: 0, reportBuckets: [] };
  for (const p of parts) {
    total.enrolled += p.enrolled;
    total.online += p.online;
    total.installing += p.installing;
    total.healthy += p.healthy;
    total.failed += p.failed;
    total.errors += p.errors;
    total.reports += p.reports;
    p.reportBuckets.forEach((n, i) => (total.reportBuckets[i] = (total.reportBuckets[i] ?? 0) + n));
    for (const [k, v] of Object.entries(p.errorKinds)) total.errorKinds[k] = (total.errorKinds[k] ?? 0) + v;
    for (const [t, r] of Object.entries(p.received)) {
      const e = (total.received[t] ??= { devices: 0, lastAt: 0 });
      e.devices += r.devices;
      e.lastAt = Math.max(e.lastAt, r.lastAt);
    }
    for (const [t, r] of Object.entries(p.installed)) {
      const e = (total.installed[t] ??= { healthy: 0, failed: 0 });
      e.healthy += r.healthy;
      e.failed += r.failed;
    }
  }
  return total;
}

export interface SimulationOptions {
  /** Worker processes; 1 runs the devices in this process. */
  workers: number;
  /** A status line this often (0: none). */
  statusIntervalMs: number;
  /** Starts a worker process running `flotilla sim` with SIM_WORKER_ENV set to `payload`, with an IPC channel. */
  fork(payload: string): ChildProcess;
}

/**
 * Runs the simulated fleet until `signal` aborts, then stops every device and worker. Rejects
 * when a worker fails (e.g. its devices could not enroll).
 */
export async function runSimulation(opts: SimOptions, run: SimulationOptions, signal: AbortSignal, out: (line: string) => void): Promise<void> {
  parseJoinString(opts.join); // a bad join string is one error here, not one per worker
  const n = opts.devices;
  const workers = Math.max(1, Math.min(run.workers, n));
  const latest: SliceStats[] = Array.from({ length: workers }, () => sum([]));
  const announced = { online: false, received: new Set<string>(), installed: new Set<string>() };
  const time = (ms: number) => new Date(ms).toISOString();
  // The longest a worker's event loop was stuck since the previous status line.
  let lagMs = 0;
  const onStats = () => {
    for (const s of latest) lagMs = Math.max(lagMs, s?.lagMs ?? 0);
    const t = sum(latest);
    if (!announced.online && t.online >= n) {
      announced.online = true;
      out(`sim: all ${n} devices online`);
    }
    for (const [target, r] of Object.entries(t.received)) {
      if (r.devices >= n && !announced.received.has(target)) {
        announced.received.add(target);
        out(`sim: all ${n} devices received ${target} (the last at ${time(r.lastAt)})`);
      }
    }
    for (const [target, r] of Object.entries(t.installed)) {
      if (r.healthy + r.failed >= n && !announced.installed.has(target)) {
        announced.installed.add(target);
        out(`sim: ${target} installed on ${n} devices: ${r.healthy} healthy, ${r.failed} failed`);
      }
    }
    return t;
  };
  // Report figures are for the time since the previous status line.
  let before = { reports: 0, buckets: [] as number[], at: performance.now() };
  const status = () => {
    const t = sum(latest);
    const kinds = Object.entries(t.errorKinds).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${v}`);
    const now = performance.now();
    const delta = t.reportBuckets.map((c, i) => c - (before.buckets[i] ?? 0));
    const count = t.reports - before.reports;
    const reports = count > 0 ? `, ${count} reports in ${((now - before.at) / 1000).toFixed(1)} s (p50 < ${bucketQuantile(delta, 0.5)} ms, p99 < ${bucketQuantile(delta, 0.99)} ms)` : "";
    before = { reports: t.reports, buckets: [...t.reportBuckets], at: now };
    const stuck = `, simulator stalled up to ${lagMs} ms`;
    lagMs = 0;
    out(`sim: ${t.enrolled}/${n} enrolled, ${t.online} online, ${t.installing} installing, ${t.healthy} installs healthy, ${t.failed} failed${reports}, ${t.errors} call errors${kinds.length ? ` (${kinds.join(", ")})` : ""}${stuck}`);
  };
  out(`sim: ${n} devices in ${workers} ${workers === 1 ? "process" : "worker processes"}, fail rate ${(opts.failRate * 100).toFixed(1)}%, churn ${(opts.churnPerMinute * 100).toFixed(1)}%/min, seed ${opts.seed}`);
  const ticker = run.statusIntervalMs > 0 ? setInterval(status, run.statusIntervalMs) : undefined;
  try {
    if (workers === 1) {
      await runSlice({ opts, from: 0, to: n }, signal, (s) => {
        latest[0] = s;
        onStats();
      });
    } else {
      await runWorkers(opts, workers, run, signal, latest, onStats);
    }
  } finally {
    clearInterval(ticker);
  }
  status();
  out("sim: stopped");
}

async function runWorkers(opts: SimOptions, workers: number, run: SimulationOptions, signal: AbortSignal, latest: SliceStats[], onStats: () => void): Promise<void> {
  const n = opts.devices;
  const children: ChildProcess[] = [];
  const exits: Promise<{ code: number | null; stderr: string }>[] = [];
  for (let w = 0; w < workers; w++) {
    const from = Math.floor((w * n) / workers);
    const to = Math.floor(((w + 1) * n) / workers);
    const child = run.fork(JSON.stringify({ opts, from, to } satisfies WorkerPayload));
    children.push(child);
    let stderr = "";
    // A worker writes to stderr only what went wrong (an error its safety net caught): passed on
    // as it comes, so a worker that carries on after one does not keep it to itself.
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      stderr = (stderr + d).slice(-4000);
      process.stderr.write(d.replace(/^(?=.)/gm, `sim worker ${w}: `));
    });
    child.on("message", (m: { stats?: SliceStats }) => {
      if (!m.stats) return;
      latest[w] = m.stats;
      onStats();
    });
    exits.push(new Promise((resolve) => child.on("exit", (code, sig) => resolve({ code: code ?? (sig ? 128 : null), stderr }))));
  }
  const stopAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill("SIGTERM");
  };
  onAbort(signal, stopAll);
  // A worker that exits on its own failed: stop the others and say why.
  const failed = exits.map((e, w) =>
    e.then((r) => {
      if (!signal.aborted) throw new Error(`simulator worker ${w} exited (${r.code}): ${r.stderr.trim().split("\n").pop() ?? ""}`);
    }),
  );
  try {
    await Promise.race([Promise.all(failed), new Promise<void>((r) => (signal.aborted ? r() : signal.addEventListener("abort", () => r())))]);
  } finally {
    stopAll();
    await Promise.all(exits);
    signal.removeEventListener("abort", stopAll);
  }
}
