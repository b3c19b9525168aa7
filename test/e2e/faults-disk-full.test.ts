/**
 * The agent's disk fills up (its state directory on a small tmpfs) during a download and while
 * it buffers logs: the device's status says so, nothing on disk is corrupted, and the agent
 * recovers by itself when space returns.
 */
import { execFileSync } from "node:child_process";
import { appendFile, mkdir, open, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { linesAt, numbered } from "./support/faults.ts";
import { freePort, tempDir, waitFor } from "@flotilla/protocol/testing";
import { type Fleet } from "./support/fleet.ts";
import { killProcessesUnder, Sandbox } from "./support/sandbox.ts";
import { bundleAgent, bundleTarball, createRelease, deviceReleases, served, serverFlags, signedFleet, waitForEnd } from "./support/releases.ts";

const canMount = process.getuid?.() === 0;

describe.skipIf(!canMount)("the agent's disk full", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;
  let stateDir = "";

  beforeAll(async () => {
    fleet = await signedFleet(sandbox);
    // Not a sandbox folder: it must be unmounted before it is removed.
    const mountDir = await tempDir("flotilla-tmpfs-");
    stateDir = join(mountDir, "state");
    await mkdir(stateDir);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=12m,mode=0700", "tmpfs", stateDir]);
    sandbox.onCleanup(async () => {
      // The release's app first: once the tmpfs is gone its working directory no longer names it.
      await killProcessesUnder(stateDir);
      execFileSync("umount", ["-l", stateDir]);
      await rm(mountDir, { recursive: true, force: true });
    });
  });
  afterAll(() => sandbox.cleanup());

  it("reports no space during a download and while buffering logs, and recovers when space returns", async () => {
    const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, numbered(1, 100));
    const { agent, name } = await bundleAgent(fleet, sandbox, ["--log-file-unit", `applog=${appLog}`], stateDir);
    await waitFor("the first lines shipped", async () => {
      const r = await fleet.admin(["logs", name, "--unit", "applog", "--json"]);
      return r.stdout.split("\n").filter(Boolean).length >= 100;
    }, 30_000, 250);

    // A release larger than the whole disk.
    const port = await freePort();
    const { path } = await bundleTarball(await sandbox.dir(), "app.tar.gz", { port, padding: 16 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
    await waitFor("the device to report no space", async () => {
      const d = await deviceReleases(fleet, name);
      return d.steps.some((s) => s.targetPath === "app/1/app.tar.gz" && /not enough disk space/.test(s.error)) ? d : undefined;
    }, 60_000, 500);
    await appendFile(appLog, numbered(101, 100));

    execFileSync("mount", ["-o", "remount,size=96m", stateDir]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    expect(await served(port)).toBe("1.0.0");
    const lines = await linesAt(fleet, name, "applog", 200);
    expect(lines).toEqual(numbered(1, 200).trimEnd().split("\n"));
    expect(agent.exitCode).toBeNull();

    // Now fill the disk with something else, and write log lines while it is full.
    const filler = join(stateDir, "filler");
    await fillDisk(filler);
    await appendFile(appLog, numbered(201, 100));
    await waitFor("the agent to notice the full disk", () => /no space/i.test(agent.output), 30_000, 250);
    await rm(filler);
    const all = await linesAt(fleet, name, "applog", 300);
    expect(all).toEqual(numbered(1, 300).trimEnd().split("\n"));
    expect(agent.exitCode).toBeNull();
  }, 180_000);
});

/** Writes `path` until the disk holding it has no space left. */
async function fillDisk(path: string): Promise<void> {
  const f = await open(path, "w");
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) await f.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    await f.close();
  }
}
