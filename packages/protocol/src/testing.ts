/**
 * Helpers for tests across packages, the whole-system tests and the benchmarks; not part of the
 * runtime surface (`@flotilla/protocol/testing`). Nothing here loads vitest, so the benchmarks
 * can use it; the vitest hooks are in testing-hooks.ts (`@flotilla/protocol/testing/hooks`).
 */
import { mkdtemp } from "node:fs/promises";
import http2 from "node:http2";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

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

/**
 * A free loopback TCP port, for processes that must keep their port across restarts or be
 * told it before they start. Another process may take it in between: where the server is ours,
 * listen on port 0 instead.
 */
export function freePort(): Promise<number> {
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
