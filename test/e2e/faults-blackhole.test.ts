/**
 * A network that silently drops everything for a minute, both ways (a NAT that forgot the
 * device, a dead uplink), while an agent ships logs, downloads a release and carries a tunnel:
 * the agent stays alive, the download resumes where it stopped, the tunnel ends with a clear
 * message on the admin's side, and every log line arrives exactly once.
 */
import { stat, appendFile, writeFile } from "node:fs/promises";
import { createServer, connect, type AddressInfo, type Socket } from "node:net";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Sandbox, waitFor, type Fleet } from "./harness.ts";
import { FaultProxy } from "./support/fault-proxy.ts";
import { bundleAgent, bundleTarball, createRelease, serverFlags, sha256, signedFleet, waitForEnd } from "./releases-harness.ts";
import { freePort } from "./harness.ts";

const numbered = (from: number, n: number) => Array.from({ length: n }, (_, i) => `line ${String(from + i).padStart(5, "0")}\n`).join("");

describe("a minute of blackhole between agent and coordinator", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;
  let proxy: FaultProxy;
  const target = { host: "127.0.0.1", port: 0 };

  beforeAll(async () => {
    proxy = await FaultProxy.start({ target });
    sandbox.onCleanup(() => proxy.close());
    fleet = await signedFleet(sandbox, ["--public-url", proxy.url]);
    target.port = fleet.port;
  });
  afterAll(() => sandbox.cleanup());

  it("keeps the agent alive, resumes the download, ends the tunnel clearly and delivers every log line once", async () => {
    // A TCP echo service on the device, reachable through a tunnel.
    const echo = createServer((s) => s.on("error", () => {}).pipe(s));
    await new Promise<void>((r) => echo.listen(0, "127.0.0.1", r));
    sandbox.onCleanup(() => new Promise((r) => echo.close(() => r())));
    const echoPort = (echo.address() as AddressInfo).port;

    const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, numbered(1, 200));
    const { agent, name, stateDir } = await bundleAgent(fleet, sandbox, [
      "--download-bytes-per-second", "1000000",
      "--log-file-unit", `applog=${appLog}`,
      "--tunnel-ports", String(echoPort),
      "--watch-timeout-ms", "60000",
    ]);

    // The tunnel: a forwarded local port, and one connection through it, echoing.
    const pf = sandbox.spawn(["--coordinator", fleet.url, "port-forward", name, `0:${echoPort}`], { FLOTILLA_HOME: fleet.adminHome }, "port-forward");
    const local = Number((await pf.waitForOutput(/127\.0\.0\.1:(\d+)/))[1]);
    const sock = await openEcho(local);
    expect(await roundTrip(sock, "hello")).toBe("hello");
    const sockClosed = new Promise<void>((r) => sock.once("close", () => r()));

    // A release of about 12 MB, downloaded at 1 MB/s.
    const port = await freePort();
    const { path, data } = await bundleTarball(await sandbox.dir(), "app.tar.gz", { port, padding: 12 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
    const part = join(stateDir, "releases", "staging", `${sha256(data)}.part`);
    await waitFor("2 MB of the download on disk", async () => (await stat(part)).size > 2 * 1024 * 1024, 30_000, 100);

    await proxy.set("blackhole");
    const holeAt = Date.now();
    await appendFile(appLog, numbered(201, 200));
    const partAtHole = (await stat(part)).size;
    // The tunnel ends while the network is gone, and the admin is told why in one line.
    await sockClosed;
    await pf.waitForOutput(/error: 127\.0\.0\.1:\d+ -> \S+: the device's agent disconnected\n/, 30_000);
    await waitFor("60 s of blackhole", () => Date.now() - holeAt >= 60_000, 70_000, 500);
    expect(agent.exitCode).toBeNull();
    await appendFile(appLog, numbered(401, 200));
    await proxy.set("pass");

    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    expect(downloads.some((s) => s.bytesDone > 0 && s.bytesDone <= partAtHole + 1024 * 1024 && s.bytesDone >= partAtHole - 1024 * 1024 && s !== downloads[0])).toBe(true);

    const lines = await waitFor("all 600 lines at the coordinator", async () => {
      const r = await fleet.admin(["logs", name, "--unit", "applog", "--json"]);
      const got = r.stdout.split("\n").filter(Boolean).map((l) => (JSON.parse(l) as { line: string }).line);
      return got.length >= 600 ? got : undefined;
    }, 60_000, 500);
    expect(lines).toEqual(numbered(1, 600).trimEnd().split("\n"));

    // The forward itself stays up: a new connection through it works again.
    const again = await openEcho(local);
    expect(await roundTrip(again, "again")).toBe("again");
    again.destroy();
    expect(agent.exitCode).toBeNull();
  }, 180_000);
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
