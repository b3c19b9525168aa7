/**
 * Whole-system test helpers: real `flotilla` processes in temporary directories, talking over
 * loopback sockets, all torn down after each test. Nothing of Flotilla's own is mocked.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readdir, readFile, readlink, rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Proc, tempDir } from "@flotilla/protocol/testing";

export const repoRoot = resolve(import.meta.dirname, "../../..");
export const flotillaBin = join(repoRoot, "packages/cli/bin/flotilla.js");

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** What Node and Flotilla's safety net (packages/cli/src/safety-net.ts) print for a bug. */
const UNCAUGHT = /Unhandled 'error' event|uncaught exception|unhandled rejection|UnhandledPromiseRejection/i;

/** The lines around the first uncaught error in `output`. */
function excerpt(output: string): string {
  const lines = output.split("\n");
  const i = lines.findIndex((l) => UNCAUGHT.test(l));
  return lines.slice(Math.max(0, i - 2), i + 12).join("\n");
}

/** Everything a test starts, torn down in one call; ready for the next test after it. */
export class Sandbox {
  readonly procs: Proc[] = [];
  /** The `flotilla` processes among them, whose output is checked for uncaught errors. */
  private readonly flotilla = new WeakSet<Proc>();
  private readonly dirs: string[] = [];
  private cleanups: (() => Promise<void>)[] = [];

  /** Runs `fn` at cleanup, after every process is gone. */
  onCleanup(fn: () => Promise<void>): void {
    this.cleanups.push(fn);
  }

  async dir(prefix = "flotilla-e2e-"): Promise<string> {
    const d = await tempDir(prefix);
    this.dirs.push(d);
    return d;
  }

  /**
   * Starts `flotilla` with these arguments and environment variables added to the test's;
   * `bin` is another checkout's bin/flotilla.js (version-skew tests), this checkout's by default.
   */
  spawn(args: string[], env: Record<string, string> = {}, label = args[0] ?? "flotilla", bin = flotillaBin): Proc {
    const child = spawn(process.execPath, [bin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const p = this.adopt(child, label);
    this.flotilla.add(p);
    return p;
  }

  /** Collects the output of a process the test started itself, and kills it at cleanup. */
  adopt(child: ChildProcess, label: string): Proc {
    const p = new Proc(child, label);
    this.procs.push(p);
    return p;
  }

  /** Runs a short `flotilla` command to completion. */
  async run(args: string[], env: Record<string, string> = {}, bin = flotillaBin): Promise<RunResult> {
    const p = this.spawn(args, env, `flotilla ${args.slice(0, 2).join(" ")}`, bin);
    const code = await p.exited;
    return { code, stdout: p.stdout, stderr: p.stderr };
  }

  /**
   * Stops everything and removes the folders; then fails if any `flotilla` process printed an
   * uncaught exception, an unhandled rejection or an unhandled 'error' event: that is a bug even
   * when the test's own assertions passed.
   */
  async cleanup(): Promise<void> {
    const procs = this.procs.splice(0);
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    const dirs = this.dirs.splice(0);
    // What a release started in one of the test's folders goes with them.
    if (dirs.length > 0) await killProcessesUnder(...dirs);
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    for (const fn of this.cleanups.splice(0)) await fn();
    const crashed = procs.filter((p) => this.flotilla.has(p) && UNCAUGHT.test(p.output));
    if (crashed.length > 0) {
      throw new Error(`a process printed an uncaught error:\n${crashed.map((p) => `--- ${p.label}\n${excerpt(p.output)}`).join("\n")}`);
    }
  }
}

/**
 * The folders a process's environment (/proc/<pid>/environ) names as a release's own: the agent
 * gives each service of a release FLOTILLA_RELEASE_DIR and FLOTILLA_DATA_DIR.
 */
export function releaseFolders(environ: string): string[] {
  return environ.split("\0").flatMap((v) => /^FLOTILLA_(?:RELEASE|DATA)_DIR=(.+)$/.exec(v)?.[1] ?? []);
}

/**
 * Kills what a test's releases left running: every process whose working directory is under one
 * of `dirs`, or whose environment names a release or data folder under one (the services an agent
 * starts outlive it by design; a test's must not outlive the test). The environment catches a
 * service whose folder is on a file system the test has already unmounted, where its working
 * directory no longer reads as the test's path.
 */
export async function killProcessesUnder(...dirs: string[]): Promise<void> {
  const under = (path: string) => dirs.some((d) => path === d || path.startsWith(`${d}/`));
  for (const pid of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cwd = await readlink(`/proc/${pid}/cwd`).catch(() => "");
    const environ = under(cwd) ? "" : await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
    const hit = under(cwd) || releaseFolders(environ).some(under);
    if (hit) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // already gone
      }
    }
  }
}
