import { spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { onAbort, type HealthSpec } from "@flotilla/protocol/agent";
import { httpCheck, HttpCheckError } from "../http-check.ts";
import { stopGroup } from "./process-group.ts";
import type { Supervisor } from "./supervisor.ts";

/** Health timing knobs (tests shorten them). */
export interface HealthTiming {
  /** With no health spec (or one that declares no check), the process must stay up this long. */
  defaultUpMs: number;
  /** Pause between attempts of a failing `command` or `http` check. */
  retryMs: number;
  /** Longest a single `command` attempt may run before its process group is killed. */
  commandTimeoutMs: number;
  /** Longest a single `http` attempt may take. */
  httpTimeoutMs: number;
}

/** Production timings: 5 s up without checks, retries every second, 30 s per command, 5 s per GET. */
export const defaultHealthTiming: HealthTiming = {
  defaultUpMs: 5_000,
  retryMs: 1_000,
  commandTimeoutMs: 30_000,
  httpTimeoutMs: 5_000,
};

class Unhealthy extends Error {}

/** Why one attempt of a check failed, and whether it ran out of time rather than failing outright. */
interface Failure {
  reason: string;
  timedOut: boolean;
}

/** Runs `/bin/sh -c command` in its own group; resolves with undefined on exit 0, else why not. */
function runCommand(command: string, cwd: string, env: Record<string, string>, timeoutMs: number, signal: AbortSignal): Promise<Failure | undefined> {
  return new Promise((resolve) => {
    const child = spawn("/bin/sh", ["-c", command], { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
    let tail = "";
    const keep = (d: Buffer): void => {
      tail = (tail + d.toString("utf8")).slice(-512);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let timedOut = false;
    const kill = (): void => {
      if (child.pid !== undefined) stopGroup(child.pid, 1_000).catch(() => undefined);
    };
    const timer = setTimeout(() => {
      timedOut = true;
      kill();
    }, timeoutMs);
    const unlisten = onAbort(signal, kill);
    child.once("error", (e) => {
      clearTimeout(timer);
      resolve({ reason: `health command could not start: ${e.message}`, timedOut: false });
    });
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      unlisten();
      if (code === 0) return resolve(undefined);
      const out = tail.trim().split("\n").pop() ?? "";
      const how = timedOut ? `timed out after ${timeoutMs} ms` : sig ? `was killed by ${sig}` : `exited with code ${code}`;
      resolve({ reason: `health command ${how}${out ? `: ${out}` : ""}`, timedOut });
    });
  });
}

async function getStatus(url: string, timeoutMs: number, signal: AbortSignal): Promise<Failure | undefined> {
  try {
    const { status } = await httpCheck(url, AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]), false);
    return status >= 200 && status < 300 ? undefined : { reason: `GET ${url} answered ${status}`, timedOut: false };
  } catch (err) {
    if (err instanceof HttpCheckError && err.timedOut) return { reason: `GET ${url} timed out after ${timeoutMs} ms`, timedOut: true };
    return { reason: `GET ${url} failed: ${(err as Error).message}`, timedOut: false };
  }
}

/**
 * Retries `attempt` (each given at most `perAttemptMs`, and never past `deadline`) until it
 * succeeds, or throws Unhealthy with the most telling reason once the window is over.
 */
async function retry(
  attempt: (budgetMs: number) => Promise<Failure | undefined>,
  perAttemptMs: number,
  deadline: number,
  retryMs: number,
  signal: AbortSignal,
): Promise<void> {
  let last: string | undefined;
  for (;;) {
    const budget = Math.max(1, Math.min(deadline - Date.now(), perAttemptMs));
    const failure = await attempt(budget);
    if (failure === undefined) return;
    // An attempt cut short by the end of the window says less than the failure before it.
    if (!(failure.timedOut && budget < perAttemptMs && last !== undefined)) last = failure.reason;
    if (signal.aborted || Date.now() + retryMs >= deadline) throw new Unhealthy(last);
    await sleep(retryMs, undefined, { signal }).catch(() => undefined);
  }
}

/**
 * Checks a freshly started release: every declared check must pass within the window, and the
 * supervised process must not exit before they all passed (nor during `upSeconds`). Resolves
 * with undefined when healthy, or with a one-line reason. Aborting `signal` fails the checks.
 */
export async function checkHealth(
  spec: HealthSpec | undefined,
  sup: Supervisor,
  cwd: string,
  env: Record<string, string>,
  timing: HealthTiming,
  signal: AbortSignal,
): Promise<string | undefined> {
  const windowMs = (spec?.windowSeconds ?? 60) * 1000;
  const start = Date.now();
  const deadline = start + windowMs;
  const hasCheck = spec?.upSeconds !== undefined || spec?.command !== undefined || spec?.http !== undefined;
  const upMs = spec?.upSeconds !== undefined ? spec.upSeconds * 1000 : hasCheck ? 0 : timing.defaultUpMs;

  if (upMs > windowMs) return `upSeconds (${upMs / 1000}) exceeds the health window (${windowMs / 1000} s)`;
  const ctl = new AbortController();
  const unlisten = onAbort(signal, () => ctl.abort());
  let unsubscribe = (): void => undefined;
  const exited = new Promise<never>((_, reject) => {
    const fail = (reason: string): void => reject(new Unhealthy(`process ${reason} during health checks`));
    if (sup.exits > 0) fail(sup.lastExit?.reason ?? "exited");
    unsubscribe = sup.onExit((e) => fail(e.reason));
  });
  const aborted = new Promise<never>((_, reject) => {
    if (signal.aborted) reject(new Unhealthy("activation aborted"));
    ctl.signal.addEventListener("abort", () => reject(new Unhealthy("activation aborted")), { once: true });
  });
  const checks: Promise<void>[] = [];
  if (upMs > 0) {
    checks.push(sleep(upMs, undefined, { signal: ctl.signal }).catch(() => undefined));
  }
  const command = spec?.command;
  if (command !== undefined) {
    checks.push(retry((budget) => runCommand(command, cwd, env, budget, ctl.signal), timing.commandTimeoutMs, deadline, timing.retryMs, ctl.signal));
  }
  const url = spec?.http;
  if (url !== undefined) {
    checks.push(retry((budget) => getStatus(url, budget, ctl.signal), timing.httpTimeoutMs, deadline, timing.retryMs, ctl.signal));
  }
  try {
    await Promise.race([Promise.all(checks), exited, aborted]);
    // A process that exits in the same instant the last check passes is not healthy.
    return sup.exits > 0 ? `process ${sup.lastExit?.reason ?? "exited"} during health checks` : undefined;
  } catch (err) {
    if (err instanceof Unhealthy) return err.message;
    throw err;
  } finally {
    exited.catch(() => undefined);
    aborted.catch(() => undefined);
    unsubscribe();
    unlisten();
    ctl.abort();
  }
}
