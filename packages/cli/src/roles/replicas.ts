/**
 * `flotilla coordinator --replicas N`: N coordinator processes on one host behind one listening
 * port, through node:cluster (the primary accepts connections and hands them to the workers in
 * turn). The primary runs no coordinator: it starts the workers, starts again one that dies, and
 * stops them all on SIGINT or SIGTERM. The workers share the PostgreSQL database and the data
 * directory like any replicas (docs/scale.md).
 */
import cluster, { type Worker } from "node:cluster";
import { randomBytes } from "node:crypto";
import { onAbort } from "@flotilla/protocol";

/** The worker's replica number (1..N) in its environment; absent outside `--replicas`. */
export const REPLICA_INDEX_ENV = "FLOTILLA_REPLICA_INDEX";
/** How long the primary waits before starting again a worker that died. */
const RESTART_DELAY_MS = 1000;

/** True in a worker started by {@link runReplicas}: it runs one coordinator. */
export function isReplicaWorker(): boolean {
  return cluster.isWorker;
}

/** Ends a worker's channel to the primary once its coordinator closed, so the worker exits. */
export function leaveCluster(): void {
  if (cluster.isWorker) cluster.worker?.disconnect();
}

/** This worker's number, 1..N (1 outside `--replicas`). */
export function replicaIndex(): number {
  return Number(process.env[REPLICA_INDEX_ENV] ?? "1");
}

/** A setup code as the coordinator makes them (16 of 32 letters and digits), shared by every worker. */
function newSetupCode(): string {
  const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  for (;;) {
    const chars = [...randomBytes(16)].map((b) => alphabet[b % alphabet.length]);
    // The coordinator refuses a given code of fewer than 8 different characters (rare, but not never).
    if (new Set(chars).size >= 8) return [0, 4, 8, 12].map((i) => chars.slice(i, i + 4).join("")).join("-");
  }
}

/**
 * Runs `n` workers (this same command, again) until `stop` aborts, then stops them and resolves
 * once all exited. Without a configured setup code, one is made here for all of them: each would
 * otherwise make its own and only the last one's would work.
 */
export async function runReplicas(n: number, opts: { setupCode: string | undefined; stop: AbortSignal; out: (text: string) => void }): Promise<void> {
  const setupCode = opts.setupCode ?? newSetupCode();
  const workers = new Map<Worker, number>();
  let stopping = false;
  let failure: Error | undefined;
  const stopAll = new AbortController();
  onAbort(opts.stop, () => stopAll.abort());
  const start = (index: number) => {
    if (stopping) return;
    const w = cluster.fork({ [REPLICA_INDEX_ENV]: String(index), FLOTILLA_SETUP_CODE: setupCode });
    let listened = false;
    workers.set(w, index);
    w.on("error", () => {});
    w.once("listening", () => (listened = true));
    w.on("exit", (code, signal) => {
      workers.delete(w);
      if (stopping) return;
      const how = signal ?? `code ${code}`;
      if (!listened) {
        // It could not start (its own message says why): starting it again would fail alike.
        failure = new Error(`replica ${index} exited (${how}) before it listened; stopping the others`);
        stopAll.abort();
        return;
      }
      opts.out(`replica ${index} (pid ${w.process.pid}) exited (${how}); starting it again\n`);
      setTimeout(() => start(index), RESTART_DELAY_MS).unref();
    });
  };
  opts.out(`starting ${n} coordinator replicas\n`);
  for (let i = 1; i <= n; i++) start(i);
  await new Promise<void>((resolve) => (stopAll.signal.aborted ? resolve() : stopAll.signal.addEventListener("abort", () => resolve())));
  stopping = true;
  const exited = [...workers.keys()].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once("exit", () => resolve()))));
  for (const w of workers.keys()) w.process.kill("SIGTERM");
  await Promise.all(exited);
  if (failure) throw failure;
}
