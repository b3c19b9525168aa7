import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { releaseFolders } from "./e2e/support/sandbox.ts";

/** Processes that a test's release started: their environment names a release folder under the temporary directory. */
function releaseProcesses(): { pid: number; releaseDir: string }[] {
  const found: { pid: number; releaseDir: string }[] = [];
  const tests = `${tmpdir()}/flotilla-`;
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    let environ = "";
    try {
      environ = readFileSync(`/proc/${pid}/environ`, "latin1");
    } catch {
      continue; // gone, or not ours to read
    }
    const releaseDir = releaseFolders(environ).find((d) => d.startsWith(tests));
    if (releaseDir) found.push({ pid: Number(pid), releaseDir });
  }
  return found;
}

/**
 * Builds the `flotilla` bundle once, so end-to-end tests run the current sources quickly. After
 * the run, fails it if a service that a test's release started is still running: every test
 * stops what it started (Sandbox.cleanup), and one that does not leaks a process into the next
 * run and the machine's benchmarks. The leftovers are killed and named.
 */
export default function setup(): () => void {
  execFileSync(process.execPath, [join(import.meta.dirname, "../scripts/build.mjs")], { stdio: "inherit" });
  const before = new Set(releaseProcesses().map((p) => p.pid));
  return () => {
    const left = releaseProcesses().filter((p) => !before.has(p.pid));
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (left.length > 0) {
      throw new Error(`tests left ${left.length} release process(es) running (now killed):\n${left.map((p) => `  pid ${p.pid}: ${p.releaseDir}`).join("\n")}`);
    }
  };
}
