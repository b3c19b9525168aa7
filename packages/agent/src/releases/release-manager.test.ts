import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import type { Logger } from "@flotilla/protocol/agent";
import type { ActivationOutcome, Activator, InstalledRelease } from "../activation/activator.ts";
import { ReleaseManager, type ReleaseStep } from "./release-manager.ts";
import { ReleaseStateFile } from "./release-state.ts";

const tmp = useTempDir("flotilla-release-manager-");

const quiet: Logger = { info: () => undefined, warn: () => undefined, error: () => undefined, child: () => quiet };

const v2: InstalledRelease = { name: "app", version: "2.0.0", counter: 2, sha256: "2".repeat(64) };
const v3: InstalledRelease = { name: "app", version: "3.0.0", counter: 3, sha256: "3".repeat(64) };
const target3 = "app/3/app-3.0.0.tar.gz";

/**
 * An activator whose recover() says what a real one says after the given crash, with `installed`
 * running afterwards; activate() is never reached here (no coordinator connection).
 */
function recovering(outcome: ActivationOutcome, installed: InstalledRelease): Activator {
  return {
    kind: "bundle",
    available: async () => true,
    recover: async () => new Map([["app", outcome]]),
    activate: async () => {
      throw new Error("not reached without a connection");
    },
    installed: async () => [installed],
    close: async () => undefined,
  };
}

/** Starts a manager on a state where 3.0.0 was handed to the activator before the agent died. */
async function afterCrash(activator: Activator, interruptions = 0): Promise<{ steps: ReleaseStep[]; state: ReleaseStateFile; stop(): Promise<void> }> {
  const dir = join(tmp.path, "releases");
  const state = new ReleaseStateFile(dir);
  await state.set("app", { target: target3, deployedAt: 1, phase: "activating", sha256: v3.sha256, interruptions });
  const steps: ReleaseStep[] = [];
  const ctl = new AbortController();
  const manager = new ReleaseManager({
    dir,
    activators: [activator],
    connection: () => undefined,
    connectionChanged: (signal) => new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true })),
    report: async (s) => void steps.push(s),
    reachedCoordinator: async () => undefined,
    bytesPerSecond: 0,
    backoffMinMs: 10,
    backoffMaxMs: 50,
    log: quiet,
  });
  manager.setDesired([{ name: "app", targetPath: target3, deployedAt: 1 }]);
  const running = manager.run(ctl.signal);
  return {
    steps,
    state: new ReleaseStateFile(dir),
    stop: async () => {
      ctl.abort();
      await running;
    },
  };
}

describe("release manager recovery", () => {
  it("reports the target healthy when recovery ends on it", async () => {
    const m = await afterCrash(recovering({ outcome: "healthy", current: v3 }, v3));
    await waitFor("the healthy step", async () => m.steps.length > 0);
    await m.stop();
    expect(m.steps).toEqual([{ name: "app", targetPath: target3, step: "healthy", error: undefined, current: v3 }]);
    expect((await m.state.get("app"))?.phase).toBe("done");
  });

  // The activator rolled 3.0.0 back and cleared its journal, then the agent was killed before it
  // reported. The next recover() finds 2.0.0 running healthy and says "healthy": that is 2.0.0's
  // health, not the target's. Taken at its word, the device reported 3.0.0 healthy while serving 2.0.0.
  it("does not report the target healthy when what runs healthy is another release, and tries the target again", async () => {
    const m = await afterCrash(recovering({ outcome: "healthy", current: v2 }, v2));
    await waitFor("the interruption to be counted", async () => (await new ReleaseStateFile(m.state.dir).get("app"))?.interruptions === 1);
    await m.stop();
    expect(m.steps.filter((s) => s.step === "healthy")).toEqual([]);
    const st = await new ReleaseStateFile(m.state.dir).get("app");
    expect(st).toMatchObject({ target: target3, phase: "activating", sha256: v3.sha256, interruptions: 1 });
  });

  it("reports the target rolled back, with what runs, once its activation was interrupted too often", async () => {
    const m = await afterCrash(recovering({ outcome: "healthy", current: v2 }, v2), 4);
    await waitFor("the final step", async () => m.steps.length > 0);
    await m.stop();
    expect(m.steps).toEqual([{ name: "app", targetPath: target3, step: "rolled-back", error: expect.stringMatching(/before it reported .* 2\.0\.0 runs/), current: v2 }]);
    expect(await new ReleaseStateFile(m.state.dir).get("app")).toMatchObject({ phase: "done", outcome: "rolled-back" });
  });
});
