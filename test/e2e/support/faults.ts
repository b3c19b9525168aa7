/**
 * What the fault scenarios share: a fleet whose agents reach the coordinator through a fault
 * proxy, numbered log lines and the check that each arrived exactly once, and a TCP echo service
 * on the "device" to carry through a tunnel.
 */
import { appendFile, stat, writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { freePort, waitFor, type Proc } from "@flotilla/protocol/testing";
import { afterAll, beforeAll } from "vitest";
import { FaultProxy } from "./fault-proxy.ts";
import { freshPostgresDatabase, type Fleet } from "./fleet.ts";
import { bundleAgent, bundleTarball, createRelease, serverFlags, sha256, signedFleet } from "./releases.ts";
import { Sandbox } from "./sandbox.ts";

/**
 * A fleet with a signing key whose join strings carry a fault proxy's address
 * (`--public-url`): agents and swarm devices reach the coordinator through the proxy, admins
 * (with `fleet.admin`) directly.
 */
export async function proxiedFleet(sandbox: Sandbox, coordinatorArgs: string[] = []): Promise<{ fleet: Fleet; proxy: FaultProxy }> {
  const target = { host: "127.0.0.1", port: 0 };
  const proxy = await FaultProxy.start({ target });
  sandbox.onCleanup(() => proxy.close());
  const fleet = await signedFleet(sandbox, ["--public-url", proxy.url, ...coordinatorArgs]);
  target.port = fleet.port;
  return { fleet, proxy };
}

/** The stores a scenario that involves the coordinator's store runs on. */
export const storeBackends = [
  { name: "SQLite", enabled: true, args: async (): Promise<string[]> => [] },
  {
    name: "PostgreSQL",
    enabled: Boolean(process.env.FLOTILLA_TEST_POSTGRES_URL),
    args: async (sandbox: Sandbox): Promise<string[]> => ["--database-url", await freshPostgresDatabase(sandbox)],
  },
];

/**
 * The test file's proxied fleet: started before its first test, torn down after its last.
 * `coordinatorArgs` may depend on the sandbox (a fresh PostgreSQL database, say).
 */
export function useProxiedFleet(
  coordinatorArgs: string[] | ((sandbox: Sandbox) => Promise<string[]>) = [],
): { readonly sandbox: Sandbox; readonly fleet: Fleet; readonly proxy: FaultProxy } {
  const sandbox = new Sandbox();
  let started: { fleet: Fleet; proxy: FaultProxy } | undefined;
  beforeAll(async () => {
    started = await proxiedFleet(sandbox, typeof coordinatorArgs === "function" ? await coordinatorArgs(sandbox) : coordinatorArgs);
  });
  afterAll(() => sandbox.cleanup());
  return {
    sandbox,
    get fleet() {
      return started!.fleet;
    },
    get proxy() {
      return started!.proxy;
    },
  };
}

/** An agent with everything in flight that a fault can cut: see busyAgent. */
export interface BusyAgent {
  agent: Proc;
  name: string;
  stateDir: string;
  /** The log file the agent follows as unit "applog"; it holds lines 1 to 100. */
  appLog: string;
  /** `flotilla port-forward` to the device's echo service, and its local port. */
  forward: Proc;
  localPort: number;
  /** A connection through the tunnel, echoing; `closed` resolves when it ends. */
  tunnel: { socket: Socket; closed: Promise<void> };
  /** The release's download in the agent's staging folder, more than 2 MB of it written. */
  part: string;
  /** The release's service port, once it runs. */
  port: number;
}

/**
 * An agent that ships logs, carries a tunnel and downloads a release of about `mb` MB at
 * 1 MB/s, all at once: returns when more than 2 MB of the download are on disk.
 */
export async function busyAgent(fleet: Fleet, sandbox: Sandbox, mb: number, extra: string[] = []): Promise<BusyAgent> {
  const echoPort = await echoService(sandbox);
  const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
  await writeFile(appLog, numbered(1, 100));
  const { agent, name, stateDir } = await bundleAgent(fleet, sandbox, [
    "--download-bytes-per-second", "1000000",
    "--log-file-unit", `applog=${appLog}`,
    "--tunnel-ports", String(echoPort),
    ...extra,
  ]);
  const forward = sandbox.spawn(["--coordinator", fleet.url, "port-forward", name, `0:${echoPort}`], { FLOTILLA_HOME: fleet.adminHome }, "port-forward");
  const localPort = Number((await forward.waitForOutput(/127\.0\.0\.1:(\d+)/))[1]);
  const socket = await openEcho(localPort);
  if ((await roundTrip(socket, "hello")) !== "hello") throw new Error("the tunnel does not echo");
  const closed = new Promise<void>((r) => socket.once("close", () => r()));

  const port = await freePort();
  const { path, data } = await bundleTarball(await sandbox.dir(), "app.tar.gz", { port, padding: mb * 1024 * 1024 });
  await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
  const deploy = await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
  if (deploy.code !== 0) throw new Error(`deploy failed: ${deploy.stderr}`);
  const part = join(stateDir, "releases", "staging", `${sha256(data)}.part`);
  await waitFor("2 MB of the download on disk", async () => (await stat(part)).size > 2 * 1024 * 1024, 30_000, 100);
  return { agent, name, stateDir, appLog, forward, localPort, tunnel: { socket, closed }, part, port };
}

/** Appends lines `from` .. `from + n - 1` to the log file. */
export function writeLines(file: string, from: number, n: number): Promise<void> {
  return appendFile(file, numbered(from, n));
}

/** Lines "line 00001", "line 00002", ... from `from`, each ending in a newline. */
export function numbered(from: number, n: number): string {
  return Array.from({ length: n }, (_, i) => `line ${String(from + i).padStart(5, "0")}\n`).join("");
}

/** Waits until the coordinator holds `n` lines of `unit` from `device`; returns them in order. */
export function linesAt(fleet: Fleet, device: string, unit: string, n: number, timeoutMs = 60_000): Promise<string[]> {
  return waitFor(
    `${n} lines of ${unit} at the coordinator`,
    async () => {
      const r = await fleet.admin(["logs", device, "--unit", unit, "--json"]);
      const got = r.stdout.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { line: string }).line);
      return got.length >= n ? got : undefined;
    },
    timeoutMs,
    500,
  );
}

/** A TCP echo service on loopback, closed at cleanup; returns its port. */
export async function echoService(sandbox: Sandbox): Promise<number> {
  const echo = createServer((s) => s.on("error", () => {}).pipe(s));
  await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
  sandbox.onCleanup(() => new Promise((r) => echo.close(() => r())));
  return (echo.address() as AddressInfo).port;
}

export function openEcho(port: number): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = connect(port, "127.0.0.1", () => res(s));
    s.once("error", rej);
  });
}

/** Writes `text` and resolves with what comes back first; "" when the connection closes first. */
export function roundTrip(s: Socket, text: string): Promise<string> {
  return new Promise((res) => {
    s.once("data", (d: Buffer) => res(d.toString()));
    s.once("close", () => res(""));
    s.write(text);
  });
}
