/**
 * The coordinator killed with SIGKILL and started again, while an admin uploads a release and an
 * agent downloads one, carries a tunnel and ships logs: the upload resumes where it stopped, the
 * download resumes, the tunnel ends with a clear message and works again once the coordinator
 * is back, and every log line arrives exactly once. Agents and the admin reach the coordinator
 * through a fault proxy, which also slows the upload down enough to be cut in the middle.
 */
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { busyAgent, linesAt, numbered, openEcho, proxiedFleet, roundTrip, storeBackends, writeLines } from "./support/faults.ts";
import { waitFor } from "@flotilla/protocol/testing";
import { type Fleet } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";
import type { FaultProxy } from "./support/fault-proxy.ts";
import { artifact, waitForEnd } from "./support/releases.ts";

/** Bytes of unfinished uploads in the coordinator's data directory. */
async function uploadedBytes(dataDir: string): Promise<number> {
  const dir = join(dataDir, "artifacts", "uploads");
  let n = 0;
  for (const f of await readdir(dir).catch(() => [] as string[])) n += (await stat(join(dir, f)).catch(() => ({ size: 0 }))).size;
  return n;
}

for (const backend of storeBackends) describe.skipIf(!backend.enabled)(`the coordinator killed and restarted mid-flight, on ${backend.name}`, () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;
  let proxy: FaultProxy;
  /** An admin command through the proxy, with the owner's key. */
  const viaProxy = (args: string[]) => sandbox.spawn(["--coordinator", proxy.url, ...args], { FLOTILLA_HOME: fleet.adminHome }, `flotilla ${args[0]}`);

  beforeAll(async () => {
    ({ fleet, proxy } = await proxiedFleet(sandbox, await backend.args(sandbox)));
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
    const busy = await busyAgent(fleet, sandbox, 8);
    await writeLines(busy.appLog, 101, 100);

    await fleet.coordinator.stop("SIGKILL");
    await busy.tunnel.closed;
    await busy.forward.waitForOutput(/error: 127\.0\.0\.1:\d+ -> \S+: /, 30_000);
    await writeLines(busy.appLog, 201, 100);
    await fleet.startCoordinator();

    const steps = await waitForEnd(fleet, busy.name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    expect(steps.filter((s) => s.step === "activating")).toHaveLength(1);

    expect(await linesAt(fleet, busy.name, "applog", 300)).toEqual(numbered(1, 300).trimEnd().split("\n"));

    const again = await waitFor("a new tunnel connection to work", async () => {
      const s = await openEcho(busy.localPort);
      const reply = await roundTrip(s, "again");
      s.destroy();
      return reply === "again" ? reply : undefined;
    }, 30_000, 500);
    expect(again).toBe("again");
    expect(busy.agent.exitCode).toBeNull();
  }, 150_000);
});
