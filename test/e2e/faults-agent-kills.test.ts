/**
 * The agent killed with SIGKILL at random moments, 50 times, while it ships logs and installs
 * releases (a power cut, the OOM killer): afterwards every log line has arrived exactly once, and
 * at every moment the release on disk was a whole old or a whole new one, never neither.
 */
import { appendFile, readdir, readlink, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { linesAt, numbered } from "./support/faults.ts";
import { freePort, waitFor, type Proc } from "@flotilla/protocol/testing";
import { type Fleet } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";
import { bundleAgent, bundleTarball, createRelease, deviceReleases, served, serverFlags, signedFleet, waitForEnd } from "./support/releases.ts";

const KILLS = 50;
const LINES_PER_ROUND = 20;

/** A small deterministic PRNG (mulberry32), so a failing run can be replayed with its seed. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The `current` link of the release named `name` under the agent's state directory, if any. */
async function currentOf(dir: string, name: string, depth = 0): Promise<string | undefined> {
  if (depth > 4) return undefined;
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory()) continue;
    const sub = join(dir, e.name);
    if (e.name === name && (await readlink(join(sub, "current")).catch(() => undefined))) return join(sub, "current");
    const found = await currentOf(sub, name, depth + 1);
    if (found) return found;
  }
  return undefined;
}

describe("the agent killed at random moments", () => {
  const sandbox = new Sandbox();
  let fleet: Fleet;

  beforeAll(async () => {
    fleet = await signedFleet(sandbox);
  });
  afterAll(() => sandbox.cleanup());

  it(`loses no log line and never leaves a release half-installed across ${KILLS} kills`, async () => {
    const seed = Number(process.env.FLOTILLA_FAULT_SEED ?? Date.now() % 100_000);
    const rand = random(seed);
    const appLog = join(await sandbox.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, "");
    const args = ["--log-file-unit", `applog=${appLog}`];
    const first = await bundleAgent(fleet, sandbox, args);
    const { name, stateDir } = first;
    let agent: Proc = first.agent;

    const port = await freePort();
    const versions = ["1.0.0", "2.0.0", "3.0.0"];
    for (const v of versions) {
      const { path } = await bundleTarball(await sandbox.dir(), `app-${v}.tar.gz`, { port, padding: 2 * 1024 * 1024 });
      await createRelease(fleet, path, "app", v, serverFlags(port, ["--health-window-seconds", "15"]));
    }

    let written = 0;
    let deployed = 0;
    for (let round = 0; round < KILLS; round++) {
      if (round === 0 || round === 15 || round === 30) {
        const r = await fleet.admin(["device", "deploy", name, `app@${versions[deployed++]}`]);
        expect(r.code, r.stderr).toBe(0);
      }
      await appendFile(appLog, numbered(written + 1, LINES_PER_ROUND));
      written += LINES_PER_ROUND;
      // The fault: a kill at a random moment of the agent's life, between 0.3 and 2 s after it started.
      await new Promise((r) => setTimeout(r, 300 + Math.floor(rand() * 1700)));
      await agent.stop("SIGKILL");
      const current = await currentOf(stateDir, "app");
      if (current) {
        // Whole: the link resolves to an unpacked release with its files.
        expect((await stat(join(current, "server.mjs"))).isFile(), `seed ${seed}, round ${round}`).toBe(true);
      }
      agent = fleet.startAgent(stateDir, undefined, args, `agent-${round}`);
    }

    const steps = await waitForEnd(fleet, name, "app/3/app-3.0.0.tar.gz", 90_000);
    expect(steps.at(-1)!.step, `seed ${seed}`).toBe("healthy");
    try {
      await waitFor("the service to answer 3.0.0", async () => (await served(port)) === "3.0.0", 30_000, 250);
    } catch (e) {
      // What the agent saw and did, so a failure here can be read from the CI log.
      const all = (await deviceReleases(fleet, name)).steps.map((s) => `${s.time} ${s.targetPath} ${s.step} ${s.error}`);
      throw new Error(`seed ${seed}: ${(e as Error).message}; served ${await served(port)}\nsteps:\n${all.join("\n")}\nlast agent:\n${agent.output.slice(-6000)}`);
    }
    const lines = await linesAt(fleet, name, "applog", written);
    expect(lines, `seed ${seed}`).toEqual(numbered(1, written).trimEnd().split("\n"));
  }, 240_000);
});
