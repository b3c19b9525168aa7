import { spawn } from "node:child_process";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { groupAlive, procStat, readPidRecord, stopOrphan, writePidRecord } from "./process-group.ts";
import { Supervisor, type RestartPolicy, type SupervisorOptions } from "./supervisor.ts";

const dir = useTempDir("flotilla-sup-");
let sups: Supervisor[] = [];
let lines: { stream: string; line: string }[] = [];

beforeEach(async () => {
  lines = [];
});
afterEach(async () => {
  await Promise.all(sups.map((s) => s.stop()));
  sups = [];
});

function supervise(command: string, restart: RestartPolicy, extra: Partial<SupervisorOptions> = {}): Supervisor {
  const sup = new Supervisor({
    name: "svc",
    release: "1-000000000000",
    command,
    cwd: dir.path,
    env: { PATH: "/usr/bin:/bin" },
    restart,
    pidPath: join(dir.path, "pid.json"),
    output: (stream, line) => lines.push({ stream, line }),
    log: silentLogger,
    backoffMinMs: 100,
    backoffMaxMs: 400,
    killGraceMs: 5_000,
    maxLineBytes: 100,
    ...extra,
  });
  sups.push(sup);
  return sup;
}

async function groupMembers(pgid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const e of await readdir("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    const st = await procStat(e);
    if (st && st.pgid === pgid && st.state !== "Z") pids.push(Number(e));
  }
  return pids;
}

describe("supervisor", () => {
  it("restarts a crashing process with exponential backoff, capped", async () => {
    const sup = supervise("echo start $(date +%s%N); exit 1", "on-failure");
    await sup.start();
    const starts = await waitFor("five runs", () => {
      const s = lines.filter((l) => l.line.startsWith("start ")).map((l) => Number(BigInt(l.line.slice(6)) / 1_000_000n));
      return s.length >= 5 ? s : undefined;
    }, 30_000);
    const gaps = starts.slice(1, 5).map((t, i) => t - starts[i]!);
    // Each restart waits at least its backoff: 100, 200, 400, then the 400 cap.
    expect(gaps[0]).toBeGreaterThanOrEqual(100);
    expect(gaps[1]).toBeGreaterThanOrEqual(200);
    expect(gaps[2]).toBeGreaterThanOrEqual(400);
    expect(gaps[3]).toBeGreaterThanOrEqual(400);
    expect(gaps[3]).toBeLessThan(800 + 2_000); // capped, not 800 and growing
    expect(sup.lastExit?.reason).toBe("exited with code 1");
  });

  it("does not restart a process that exited 0 under on-failure, nor any under never", async () => {
    const clean = supervise("echo once", "on-failure", { pidPath: join(dir.path, "a.json") });
    const never = supervise("echo twice; exit 4", "never", { pidPath: join(dir.path, "b.json") });
    await clean.start();
    await never.start();
    await waitFor("both to exit for good", () => clean.state === "exited" && never.state === "exited");
    expect([clean.exits, never.exits]).toEqual([1, 1]);
    expect(lines.map((l) => l.line).sort()).toEqual(["once", "twice"]);
  });

  it("captures stdout and stderr line by line, splitting overlong lines", async () => {
    const sup = supervise("printf 'a\\r\\nb\\n'; printf 'err1\\n' >&2; printf '%0250d\\n' 0; printf 'tail'", "never");
    await sup.start();
    await waitFor("the last line", () => lines.some((l) => l.line === "tail"));
    expect(lines.filter((l) => l.stream === "stderr")).toEqual([{ stream: "stderr", line: "err1" }]);
    expect(lines.filter((l) => l.stream === "stdout").map((l) => l.line)).toEqual(["a", "b", "0".repeat(100), "0".repeat(100), "0".repeat(50), "tail"]);
  });

  it("stops the whole process group, with SIGKILL once the grace ran out for processes that ignore SIGTERM", async () => {
    const sup = supervise("trap '' TERM; sleep 300 & sleep 300 & echo ready; wait", "always", { killGraceMs: 300 });
    await sup.start();
    await waitFor("ready", () => lines.some((l) => l.line === "ready"));
    const pgid = sup.pid!;
    expect((await groupMembers(pgid)).length).toBeGreaterThanOrEqual(3);
    expect(await readPidRecord(join(dir.path, "pid.json"))).toMatchObject({ pid: pgid });

    const t0 = Date.now();
    await sup.stop();
    expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
    expect(await groupMembers(pgid)).toEqual([]);
    expect(sup.state).toBe("stopped");
    expect(await readPidRecord(join(dir.path, "pid.json"))).toBeUndefined();
  });

  it("stops an orphaned group found through its pidfile, but never a process whose start time differs", async () => {
    const orphan = spawn("/bin/sh", ["-c", "sleep 300 & wait"], { detached: true, stdio: "ignore" });
    const other = spawn("/bin/sh", ["-c", "sleep 300 & wait"], { detached: true, stdio: "ignore" });
    try {
      const pidPath = join(dir.path, "pid.json");
      const st = await waitFor("the orphan's /proc entry", () => procStat(orphan.pid!));
      await writePidRecord(pidPath, { pid: orphan.pid!, startTime: st.startTime, release: "1-000000000000" });
      expect(await stopOrphan(pidPath, 2_000)).toBe(true);
      expect(await groupAlive(orphan.pid!)).toBe(false);
      expect(await readPidRecord(pidPath)).toBeUndefined();

      const otherStat = await waitFor("the other's /proc entry", () => procStat(other.pid!));
      await writePidRecord(pidPath, { pid: other.pid!, startTime: String(Number(otherStat.startTime) + 1), release: "1-000000000000" });
      expect(await stopOrphan(pidPath, 2_000)).toBe(false);
      expect(await groupAlive(other.pid!)).toBe(true);
    } finally {
      for (const p of [orphan, other]) {
        try {
          process.kill(-p.pid!, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
  });

  it("returns from stop even when a process that left the group keeps the output pipes open", async () => {
    const sup = supervise("setsid sh -c 'echo $$ > escaped.pid; exec sleep 300' & echo ready; wait", "never");
    await sup.start();
    await waitFor("ready", () => lines.some((l) => l.line === "ready"));
    const { readFile } = await import("node:fs/promises");
    const escaped = await waitFor("the escaped pid", async () => Number(await readFile(join(dir.path, "escaped.pid"), "utf8")));
    try {
      await sup.stop();
      expect(sup.state).toBe("stopped");
    } finally {
      process.kill(escaped, "SIGKILL");
    }
  });
});
