/**
 * Device clocks are wrong more often than not (no RTC battery, no NTP before the network is up).
 * An agent whose clock is an hour ahead or behind still enrolls, keeps its session, passes the
 * TUF checks of a release (their expiry is days away, not hours) and ships logs: Flotilla
 * tolerates such a skew, as docs/failure-behaviour.md says. The skew is real: libfaketime shifts
 * the agent process's clock (Debian's faketime package).
 */
import { existsSync } from "node:fs";
import { appendFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { fastAgentFlags, type Fleet } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";
import { bundleTarball, createRelease, served, serverFlags, signedFleet, waitForEnd } from "./support/releases.ts";

const LIBFAKETIME = ["/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"].find((p) => existsSync(p));

describe.skipIf(!LIBFAKETIME)("an agent with a skewed clock", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await signedFleet(sandbox);
  });
  afterAll(() => sandbox.cleanup());

  for (const skew of ["+1h", "-1h"]) {
    it(`enrolls, installs a signed release and ships logs with its clock ${skew === "+1h" ? "an hour ahead" : "an hour behind"}`, async () => {
      const stateDir = await sandbox.dir("flotilla-agent-");
      const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
      await writeFile(appLog, "");
      const join_ = await fleet.joinToken(["--auto-approve", "--labels", `skew=${skew === "+1h" ? "ahead" : "behind"}`]);
      const agent = sandbox.spawn(
        ["agent", "--state-dir", stateDir, "--join", join_, ...fastAgentFlags, "--log-file-unit", `applog=${appLog}`],
        { LD_PRELOAD: LIBFAKETIME!, FAKETIME: skew, FAKETIME_DONT_FAKE_MONOTONIC: "1" },
        `agent ${skew}`,
      );
      const dev = await waitFor("the skewed agent online", async () =>
        (await fleet.devices(`skew=${skew === "+1h" ? "ahead" : "behind"}`)).find((d) => d.status === "online"), 40_000, 250);

      const port = await freePort();
      const release = `app-${skew === "+1h" ? "ahead" : "behind"}`;
      const version = "1.0.0";
      const { path } = await bundleTarball(await sandbox.dir(), `${release}.tar.gz`, { port });
      await createRelease(fleet, path, release, version, serverFlags(port));
      expect((await fleet.admin(["device", "deploy", dev.name, `${release}@${version}`])).code).toBe(0);
      const [listed] = await fleet.adminJson<{ targetPath: string }[]>(["release", "ls", "--name", release]);
      const steps = await waitForEnd(fleet, dev.name, listed!.targetPath, 60_000);
      expect(steps.at(-1)!.step).toBe("healthy");
      expect(await served(port)).toBe(version);

      await appendFile(appLog, "hello from a skewed clock\n");
      const line = await waitFor("the log line at the coordinator", async () => {
        const r = await fleet.admin(["logs", dev.name, "--unit", "applog", "--json"]);
        return r.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { line: string; time: string }).find((l) => l.line === "hello from a skewed clock");
      }, 30_000, 250);
      // The skew was real: the line carries the device's own clock, an hour off the coordinator's.
      const offset = Date.parse(line.time) - Date.now();
      expect(Math.abs(offset - (skew === "+1h" ? 3600_000 : -3600_000))).toBeLessThan(5 * 60_000);
      expect(agent.exitCode).toBeNull();
    }, 120_000);
  }
});
