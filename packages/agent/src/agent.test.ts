import { describe, expect, it } from "vitest";
import { loadConfig, silentLogger } from "@flotilla/protocol";
import { freePort } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { runAgent } from "./agent.ts";
import { agentOptionSpecs } from "./config.ts";
import { StateDir } from "./state.ts";

const dir = useTempDir("flotilla-agent-run-");

/** Resolves with what `p` resolves with, or with "still running" after `ms`. */
function within<T>(p: Promise<T>, ms: number): Promise<T | "still running"> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<"still running">((resolve) => (timer = setTimeout(() => resolve("still running"), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe("runAgent", () => {
  it("stops when the stop came before it listened for one (SIGTERM while `flotilla up` or the agent was starting)", async () => {
    // Enrolled with a coordinator that does not answer: left alone, the agent would dial it forever.
    const port = await freePort();
    await new StateDir(dir.path).writeEnrollment({
      url: `http://127.0.0.1:${port}`,
      pin: "unused-pin",
      deviceId: "dev_test",
      name: "test",
      orgId: "org_test",
      enrolledAt: Date.now(),
    });
    const opts = loadConfig(agentOptionSpecs, { flags: { stateDir: dir.path, backoffMinMs: 10, backoffMaxMs: 50 }, env: {} }).values;
    const stopped = new AbortController();
    stopped.abort();
    const run = runAgent(opts, silentLogger, stopped.signal);
    expect(await within(run, 15_000)).toBe("stopped");
  });
});
