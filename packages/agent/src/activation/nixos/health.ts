import { sleep, type HealthSpec } from "@flotilla/protocol/agent";
import { httpCheck } from "../http-check.ts";
import { runProgram } from "./run.ts";

const RETRY_MS = 1000;

/**
 * Retries `check` until it passes or `signal` aborts; each failure's reason is kept so the caller
 * can say why the window ran out.
 */
async function until(what: string, check: () => Promise<string | undefined>, signal: AbortSignal): Promise<void> {
  let last = "not run";
  while (!signal.aborted) {
    const failure = await check().catch((err: unknown) => String(err));
    if (failure === undefined) return;
    last = failure;
    await sleep(RETRY_MS, signal);
  }
  throw new Error(`${what} did not pass: ${last}`);
}

/**
 * The release's health checks on the new system: its command (run with /bin/sh in /) exits 0 and
 * its URL answers 2xx, each retried until it passes or `signal` (the confirm window) ends.
 */
export async function runHealthChecks(spec: HealthSpec | undefined, env: NodeJS.ProcessEnv | undefined, signal: AbortSignal): Promise<void> {
  const checks: Promise<void>[] = [];
  const command = spec?.command;
  if (command) {
    checks.push(
      until(
        `health command ${JSON.stringify(command)}`,
        async () => {
          const r = await runProgram("/bin/sh", ["-c", command], { env, signal });
          return r.code === 0 ? undefined : `exit ${r.code}${r.tail ? `: ${r.tail.split("\n").pop()}` : ""}`;
        },
        signal,
      ),
    );
  }
  const url = spec?.http;
  if (url) {
    checks.push(
      until(
        `health URL ${url}`,
        async () => {
          const { status } = await httpCheck(url, signal, true);
          return status >= 200 && status < 300 ? undefined : `HTTP ${status}`;
        },
        signal,
      ),
    );
  }
  await Promise.all(checks);
}
