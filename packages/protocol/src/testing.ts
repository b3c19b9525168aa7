/**
 * Helpers for tests across packages, the whole-system tests and the benchmarks; not part of the
 * runtime surface (`@flotilla/protocol/testing`). Nothing here loads vitest, so the benchmarks
 * can use it; the vitest hooks are in testing-hooks.ts (`@flotilla/protocol/testing/hooks`).
 */
import type { ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import http2 from "node:http2";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export * from "./property-runs.ts";

/** GETs `/` over HTTP/2 (h2c for http://, h2 for https://) and resolves with the body. */
export function h2Get(url: string, options: http2.SecureClientSessionOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url, options);
    session.on("error", reject);
    const stream = session.request({ ":path": "/" });
    let body = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => (body += chunk));
    stream.on("end", () => {
      session.close();
      resolve(body);
    });
    stream.on("error", reject);
  });
}

/**
 * Waits until `check` returns a truthy value and resolves with it, polling every `intervalMs`.
 * A `check` that throws counts as not yet; after `timeoutMs` it rejects with an error naming
 * `what` and the last error `check` threw. Prefer it to a bare sleep: it waits only as long as
 * needed, and a condition that never comes fails the test with a reason.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Ports freePort picks from: below Linux's default ephemeral range (32768-60999). */
export const FREE_PORT_RANGE = { from: 20_000, to: 32_767 } as const;

/** Whether a server can listen on 127.0.0.1:`port` now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once("error", () => res(false));
    s.listen(port, "127.0.0.1", () => s.close(() => res(true)));
  });
}

/**
 * A free loopback TCP port, for processes that must keep their port across restarts or be
 * told it before they start. Another process may take it in between: where the server is ours,
 * listen on port 0 instead. The port is picked at random below the kernel's ephemeral range,
 * from which both `listen(0)` and the source ports of outgoing connections are assigned: a port
 * from that range was often taken by a connection (to PostgreSQL, say) in the second before the
 * process it was meant for bound it.
 */
export async function freePort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = FREE_PORT_RANGE.from + Math.floor(Math.random() * (FREE_PORT_RANGE.to - FREE_PORT_RANGE.from + 1));
    if (await bindable(port)) return port;
  }
  // Fifty taken in a row: the kernel's choice, then.
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? res(addr.port) : rej(new Error("no port"))));
    });
  });
}

/** A new empty directory under the system's temporary directory, named `<prefix>XXXXXX`; the caller removes it. */
export function tempDir(prefix = "flotilla-test-"): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix));
}

/**
 * A child process a test started (a `flotilla` one, a script run with tsx, a tool such as sshd)
 * whose output is collected. It does not kill the child by itself: stop it when the test ends.
 */
export class Proc {
  stdout = "";
  stderr = "";
  exitCode: number | null = null;
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess, readonly label: string) {
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((res) =>
      child.on("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : null);
        res(this.exitCode);
      }),
    );
  }

  /** stdout followed by stderr. */
  get output(): string {
    return this.stdout + this.stderr;
  }

  /** Waits for a line matching `re` in stdout or stderr; returns the match. */
  waitForOutput(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return waitFor(`${this.label} to print ${re}`, () => {
      if (this.exitCode !== null && !re.test(this.output)) {
        throw new Error(`${this.label} exited with ${this.exitCode}:\n${this.output}`);
      }
      return this.output.match(re) ?? undefined;
    }, timeoutMs);
  }

  /**
   * SIGTERM (or the given signal), then wait for exit. A process still running `timeoutMs` later
   * is killed and the call fails naming it, with the end of its output: a process that does not
   * stop when asked is a bug, and the test should say which one it was.
   */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 30_000): Promise<number | null> {
    if (this.exitCode !== null) return this.exitCode;
    this.child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), timeoutMs)));
    const result = await Promise.race([this.exited, late]).finally(() => clearTimeout(timer));
    if (result !== "late") return result;
    this.child.kill("SIGKILL");
    await this.exited;
    throw new Error(`${this.label} did not exit within ${timeoutMs} ms of ${signal}; its output ended:\n${this.output.slice(-2000)}`);
  }
}
