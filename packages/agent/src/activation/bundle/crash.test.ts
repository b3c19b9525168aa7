import { spawn } from "node:child_process";
import { readlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { freePort, Proc, waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import type { ActivationOutcome, ActivationRequest } from "../activator.ts";
import { exists } from "../../durable.ts";
import { processesUnder, served, serverBundle, serviceMeta } from "./testing/fixtures.ts";

const childScript = join(import.meta.dirname, "testing", "crash-child.ts");
const tmp = useTempDir("flotilla-crash-");
let work: string;
let root: string;
let procs: Proc[] = [];

beforeEach(() => {
  work = tmp.path;
  root = join(work, "bundles");
});
afterEach(async () => {
  await Promise.all(procs.map((p) => p.stop("SIGKILL")));
  procs = [];
  for (const pid of await processesUnder(root)) process.kill(pid, "SIGKILL");
});

function child(mode: "activate" | "recover", extra: { activations?: ActivationRequest[]; pauseAt?: string } = {}): Proc {
  const cfg = { dir: root, env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin` }, mode, ...extra };
  const p = new Proc(
    spawn(process.execPath, ["--import", "tsx", childScript, JSON.stringify(cfg)], { cwd: import.meta.dirname, stdio: ["pipe", "pipe", "pipe"] }),
    `${mode} child`,
  );
  procs.push(p);
  return p;
}

/** Closes the child's stdin: it stops its processes and exits. */
async function finish(p: Proc): Promise<void> {
  p.child.stdin?.end();
  expect(await p.exited).toBe(0);
}

// [where the agent is killed, whether the new version is healthy, the version recovery ends on]
const cases: [string, boolean, string][] = [
  ["unpacking", true, "1.0.0"],
  ["unpacked", true, "1.0.0"],
  ["switching", true, "1.0.0"],
  ["stopped", true, "1.0.0"],
  ["swapped", true, "2.0.0"],
  ["health-checking", true, "2.0.0"],
  ["started", true, "2.0.0"],
  ["confirmed", true, "2.0.0"],
  ["started", false, "1.0.0"],
  ["rolling-back", false, "1.0.0"],
  ["rolled-back-swapped", false, "1.0.0"],
];

describe("crash safety", () => {
  it.each(cases)("after a kill -9 at %s (new version healthy: %s), recover() in a new process ends on %s, running and healthy, one copy", async (point, healthy, expected) => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port });
    const a2 = await serverBundle(work, "v2", { port, health: healthy ? 200 : 500 });
    const releases: ActivationRequest[] = [
      { meta: serviceMeta("web", "1.0.0", 1, port), sha256: a1.sha256, artifactPath: a1.path },
      { meta: serviceMeta("web", "2.0.0", 2, port, { health: { http: `http://127.0.0.1:${port}/healthz`, windowSeconds: healthy ? 30 : 5 } }), sha256: a2.sha256, artifactPath: a2.path },
    ];

    const agent = child("activate", { activations: releases, pauseAt: point });
    await agent.waitForOutput(new RegExp(`paused ${point}\\n`), 60_000);
    await agent.stop("SIGKILL");

    const recovered = child("recover");
    const line = await recovered.waitForOutput(/recovered (.*)\n/, 60_000);
    const outcome = (JSON.parse(line[1]!) as Record<string, ActivationOutcome>).web;
    expect(outcome?.current?.version).toBe(expected);
    expect(outcome?.outcome).toBe(expected === "2.0.0" ? "healthy" : "rolled-back");
    // Killed before the switch, nothing of 2.0.0 ran: the agent may try it again. After it ran
    // and failed its checks, it was rolled back for a reason and is not tried again.
    const beforeSwitch = ["unpacking", "unpacked", "switching", "stopped"].includes(point);
    expect(outcome?.outcome !== "healthy" && outcome?.interrupted === true).toBe(beforeSwitch);
    const id = expected === "2.0.0" ? `2-${a2.sha256.slice(0, 12)}` : `1-${a1.sha256.slice(0, 12)}`;
    expect(await readlink(join(root, "web", "current"))).toBe(join("releases", id));
    expect((await served(port))?.split(" ")[0]).toBe(expected);
    expect(await processesUnder(root)).toHaveLength(1);
    expect(await exists(join(root, "web", "journal.json"))).toBe(false);

    await finish(recovered);
    expect(await processesUnder(root)).toEqual([]);
  });

  it("after a kill -9 while a first install is failing its health checks, recover() leaves nothing running and reports failed", async () => {
    const port = await freePort();
    const a1 = await serverBundle(work, "v1", { port, health: 500 });
    const meta = serviceMeta("web", "1.0.0", 1, port, { health: { http: `http://127.0.0.1:${port}/healthz`, windowSeconds: 5 } });
    const agent = child("activate", { activations: [{ meta, sha256: a1.sha256, artifactPath: a1.path }], pauseAt: "started" });
    await agent.waitForOutput(/paused started\n/, 60_000);
    await agent.stop("SIGKILL");
    await waitFor("the orphaned service", async () => (await processesUnder(root)).length === 1);

    const recovered = child("recover");
    const line = await recovered.waitForOutput(/recovered (.*)\n/, 60_000);
    const outcome = (JSON.parse(line[1]!) as Record<string, ActivationOutcome>).web;
    expect(outcome?.outcome).toBe("failed");
    expect(outcome?.outcome === "failed" && outcome.error).toMatch(/answered 500/);
    expect(outcome?.current).toBeUndefined();
    expect(await processesUnder(root)).toEqual([]);
    expect(await exists(join(root, "web", "current"))).toBe(false);
    await finish(recovered);
  });
});
