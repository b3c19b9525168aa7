import { createServer, type Server } from "node:http";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { checkHealth, type HealthTiming } from "./health.ts";
import { Supervisor } from "./supervisor.ts";

const dir = useTempDir("flotilla-health-");
let sup: Supervisor;
let server: Server | undefined;
const env = { PATH: "/usr/bin:/bin" };
const timing: HealthTiming = { defaultUpMs: 300, retryMs: 100, commandTimeoutMs: 30_000, httpTimeoutMs: 5_000 };
const signal = new AbortController().signal;

function supervise(command: string): Supervisor {
  sup = new Supervisor({
    name: "svc",
    release: "1-000000000000",
    command,
    cwd: dir.path,
    env,
    restart: "never",
    pidPath: join(dir.path, "pid.json"),
    output: () => {},
    log: silentLogger,
    backoffMinMs: 100,
    backoffMaxMs: 400,
    killGraceMs: 2_000,
    maxLineBytes: 1024,
  });
  return sup;
}

afterEach(async () => {
  await sup.stop();
  await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
  server = undefined;
});

describe("checkHealth", () => {
  it("passes once an HTTP GET answers 2xx, retrying while it does not", async () => {
    let calls = 0;
    server = createServer((_req, res) => {
      calls++;
      res.statusCode = calls < 3 ? 503 : 204;
      res.end();
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as { port: number }).port;
    const s = supervise("exec sleep 300");
    await s.start();
    expect(await checkHealth({ http: `http://127.0.0.1:${port}/`, windowSeconds: 20 }, s, dir.path, env, timing, signal)).toBeUndefined();
    expect(calls).toBe(3);
  });

  it("fails as soon as the process exits, before upSeconds have passed", async () => {
    const s = supervise("exit 7");
    await s.start();
    const t0 = Date.now();
    const why = await checkHealth({ upSeconds: 30, windowSeconds: 60 }, s, dir.path, env, timing, signal);
    expect(why).toBe("process exited with code 7 during health checks");
    expect(Date.now() - t0).toBeLessThan(30_000);
  });

  it("reports a command's real failure, not the timeout of a last attempt the window cut short", async () => {
    const s = supervise("exec sleep 300");
    await s.start();
    const command = "if [ -e tried ]; then sleep 60; else touch tried; echo not ready >&2; exit 1; fi";
    const why = await checkHealth({ command, windowSeconds: 2 }, s, dir.path, env, timing, signal);
    expect(why).toBe("health command exited with code 1: not ready");
  });

  it("without declared checks, requires the process to stay up for the default time", async () => {
    const s = supervise("exec sleep 300");
    await s.start();
    const t0 = Date.now();
    expect(await checkHealth(undefined, s, dir.path, env, timing, signal)).toBeUndefined();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
  });
});
