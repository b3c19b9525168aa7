import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { describe, expect, it } from "vitest";
import { useTempDir } from "./testing-hooks.ts";
import { spawn } from "node:child_process";
import { FREE_PORT_RANGE, freePort, Proc, waitFor } from "./testing.ts";

describe("test helpers", () => {
  it("waitFor resolves with the first truthy value, treating a throw as not yet", async () => {
    let calls = 0;
    const v = await waitFor("the third call", () => {
      calls++;
      if (calls === 1) throw new Error("not ready");
      return calls === 3 ? "ready" : undefined;
    }, 5_000, 1);
    expect(v).toBe("ready");
    expect(calls).toBe(3);
  });

  it("waitFor fails after its deadline, naming what it waited for and the last error", async () => {
    await expect(waitFor("the impossible", () => {
      throw new Error("still no");
    }, 30, 5)).rejects.toThrow(/timed out after 30 ms waiting for the impossible: Error: still no/);
  });

  it("freePort gives a port a server can listen on, outside the kernel's ephemeral range", async () => {
    const port = await freePort();
    expect(port).toBeGreaterThanOrEqual(FREE_PORT_RANGE.from);
    expect(port).toBeLessThanOrEqual(FREE_PORT_RANGE.to);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    expect((server.address() as { port: number }).port).toBe(port);
    await new Promise((resolve) => server.close(resolve));
  });

  describe("useTempDir", () => {
    const dir = useTempDir("flotilla-testing-");
    let previous = "";

    it("gives each test an empty directory of its own", () => {
      expect(existsSync(dir.path)).toBe(true);
      expect(dir.path).toMatch(/flotilla-testing-/);
      previous = dir.path;
    });

    it("removed the previous test's directory", () => {
      expect(dir.path).not.toBe(previous);
      expect(existsSync(previous)).toBe(false);
    });
  });

  it("stop() kills a process that ignores SIGTERM after its deadline and fails naming it", async () => {
    const child = spawn(process.execPath, ["-e", 'process.on("SIGTERM", () => {}); console.log("ready"); setInterval(() => {}, 1000);'], { stdio: ["ignore", "pipe", "pipe"] });
    const p = new Proc(child, "stubborn");
    await p.waitForOutput(/ready/);
    await expect(p.stop("SIGTERM", 300)).rejects.toThrow(/^stubborn did not exit within 300 ms of SIGTERM; its output ended:\nready/);
    expect(child.signalCode).toBe("SIGKILL");
  });
});
