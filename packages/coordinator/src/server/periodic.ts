/** Background work the coordinator repeats on a timer: sweeps of abandoned uploads, garbage collection. */
import type { Logger } from "@flotilla/protocol";
import { leaseTtlMs, type Leases } from "./lease.ts";

/** The lease a periodic task runs under, so that one replica of several runs it (lease.ts). */
export interface PeriodicLease {
  leases: Leases;
  name: string;
}

/** A periodic task, started by {@link startPeriodic}. */
export interface Periodic {
  /** Stops the timer and waits for a run under way to end. */
  close(): Promise<void>;
}

/**
 * Runs `task` every `intervalMs` while no run is under way (and once at once, awaited, with
 * `runNow`). A failed run is logged as `failure`, never thrown: the next tick tries again.
 * With `lease`, a run happens only on the replica that holds (takes or renews) the lease; the
 * others' ticks do nothing.
 */
export async function startPeriodic(
  task: () => Promise<void>,
  intervalMs: number,
  log: Logger,
  failure: string,
  opts: { runNow?: boolean; lease?: PeriodicLease } = {},
): Promise<Periodic> {
  let running: Promise<void> | undefined;
  let closed = false;
  const run = () => {
    if (running || closed) return running;
    const lease = opts.lease;
    const guarded = lease ? async () => ((await lease.leases.hold(lease.name, leaseTtlMs(intervalMs))) ? task() : undefined) : task;
    running = guarded()
      .catch((err: unknown) => log.warn(failure, { err: String(err) }))
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  if (opts.runNow) await run();
  const timer = setInterval(() => void run(), intervalMs);
  timer.unref();
  return {
    async close() {
      closed = true;
      clearInterval(timer);
      await running;
    },
  };
}
