/**
 * The coordinator killed with SIGKILL and started again, while an admin uploads a release and an
 * agent downloads one, carries a tunnel and ships logs: the upload resumes where it stopped, the
 * download resumes, the tunnel ends with a clear message and works again once the coordinator
 * is back, and every log line arrives exactly once. Agents and the admin reach the coordinator
 * through a fault proxy, which also slows the upload down enough to be cut in the middle.
 */
import { appendFile, readdir, stat, writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, Sandbox, waitFor, type Fleet } from "./harness.ts";
import { FaultProxy } from "./support/fault-proxy.ts";
import { artifact, bundleAgent, bundleTarball, createRelease, serverFlags, sha256, signedFleet, waitForEnd } from "./releases-harness.ts";

const numbered = (from: number, n: number) => Array.from({ length: n }, (_, i) => `line ${String(from + i).padStart(5, "0")}\n`).join("");

/** Bytes of unfinished uploads in the coordinator's data directory. */
async function uploadedBytes(dataDir: string): Promise<number> {
  const dir = join(dataDir, "artifacts", "uploads");
  let n = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) n += (await stat(join(dir, f)).catch(() => ({ size: 0 }))).size;
  return n;
}

describe("the coordinator killed and restarted mid-flight", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;
  let proxy: FaultProxy;
  const target = { host: "127.0.0.1", port: 0 };
  /** An admin command through the proxy, with the owner's key. */
  const viaProxy = (args: string[]) => sandbox.spawn(["--coordinator", proxy.url, ...args], { FLOTILLA_HOME: fleet.adminHome }, `flotilla ${args[0]}`);

  beforeAll(async () => {
    proxy = await FaultProxy.start({ target });
    sandbox.onCleanup(() => proxy.close());
    fleet = await signedFleet(sandbox, ["--public-url", proxy.url]);
    target.port = fleet.port;
    const login = viaProxy(["login"]);
    expect(await login.exited, login.output).toBe(0);
  });
  afterAll(() => sandbox.cleanup());

  it("resumes an admin's upload that the kill cut off", async () => {
    const { path } = await artifact(await sandbox.dir(), "big.bin", 8 * 1024 * 1024);
    proxy.bytesPerSecond = 2 * 1024 * 1024;
    const first = viaProxy(["release", "create", path, "--name", "big", "--version", "1.0.0", "--run", "bin/app"]);
    await waitFor("1 MB of the upload stored", async () => (await uploadedBytes(fleet.dataDir)) > 1024 * 1024, 30_000, 50);
    await fleet.coordinator.stop("SIGKILL");
    expect(await first.exited).not.toBe(0);
    // One line saying what went wrong, after the progress line; no stack trace.
    expect(first.stderr.trim().split("\n").filter((l) => !l.startsWith("uploading "))).toEqual([expect.stringMatching(/^error: /)]);

    await fleet.startCoordinator();
    proxy.bytesPerSecond = 0;
    const again = viaProxy(["release", "create", path, "--name", "big", "--version", "1.0.0", "--run", "bin/app"]);
    expect(await again.exited, again.output).toBe(0);
    const resumedAt = Number(again.output.match(/resuming at byte (\d+)/)?.[1]);
    expect(resumedAt).toBeGreaterThan(1024 * 1024);
  }, 120_000);

  it("resumes the agent's download, ends and reopens its tunnel, and loses no log line", async () => {
    const echo = createServer((s) => s.on("error", () => {}).pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    sandbox.onCleanup(() => new Promise((r) => echo.close(() => r())));
    const echoPort = (echo.address() as AddressInfo).port;
    const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, numbered(1, 100));
    const { agent, name, stateDir } = await bundleAgent(fleet, sandbox, [
      "--download-bytes-per-second", "1000000",
      "--log-file-unit", `applog=${appLog}`,
      "--tunnel-ports", String(echoPort),
    ]);

    const pf = sandbox.spawn(["--coordinator", fleet.url, "port-forward", name, `0:${echoPort}`], { FLOTILLA_HOME: fleet.adminHome }, "port-forward");
    const local = Number((await pf.waitForOutput(/127\.0\.0\.1:(\d+)/))[1]);
    const sock = await openEcho(local);
    expect(await roundTrip(sock, "hello")).toBe("hello");
    const sockClosed = new Promise<void>((r) => sock.once("close", () => r()));

    const port = await freePort();
    const { path, data } = await bundleTarball(await sandbox.dir(), "app.tar.gz", { port, padding: 8 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
    const part = join(stateDir, "releases", "staging", `${sha256(data)}.part`);
    await waitFor("2 MB of the download on disk", async () => (await stat(part)).size > 2 * 1024 * 1024, 30_000, 100);
    await appendFile(appLog, numbered(101, 100));

    await fleet.coordinator.stop("SIGKILL");
    await sockClosed;
    await pf.waitForOutput(/error: 127\.0\.0\.1:\d+ -> \S+: /, 30_000);
    await appendFile(appLog, numbered(201, 100));
    await fleet.startCoordinator();

    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    expect(steps.filter((s) => s.step === "activating")).toHaveLength(1);

    const lines = await waitFor("all 300 lines at the coordinator", async () => {
      const r = await fleet.admin(["logs", name, "--unit", "applog", "--json"]);
      const got = r.stdout.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { line: string }).line);
      return got.length >= 300 ? got : undefined;
    }, 60_000, 500);
    expect(lines).toEqual(numbered(1, 300).trimEnd().split("\n"));

    const again = await waitFor("a new tunnel connection to work", async () => {
      const s = await openEcho(local);
      const reply = await Promise.race([roundTrip(s, "again"), new Promise<string>((r) => s.once("close", () => r("")))]);
      s.destroy();
      return reply === "again" ? reply : undefined;
    }, 30_000, 500);
    expect(again).toBe("again");
    expect(agent.exitCode).toBeNull();
  }, 150_000);
});

function openEcho(port: number): Promise<Socket> {
  return new Promise((res, rej) => {
    const s = connect(port, "127.0.0.1", () => res(s));
    s.once("error", rej);
  });
}

function roundTrip(s: Socket, text: string): Promise<string> {
  return new Promise((res) => {
    s.once("data", (d: Buffer) => res(d.toString()));
    s.write(text);
  });
}
