import { spawn, type ChildProcess } from "node:child_process";
import type { Logger } from "@flotilla/protocol/agent";
import { LineSplitter } from "./lines.ts";
import { groupAlive, procStat, removePidRecord, stopGroup, writePidRecord } from "./process-group.ts";

/** When a supervised process is restarted: always, after a non-zero exit or a signal, or never. */
export type RestartPolicy = "always" | "on-failure" | "never";

/** How one supervised process runs. */
export interface SupervisorOptions {
  /** The release name (the `unit` of output events). */
  name: string;
  /** The release id, recorded in the pidfile. */
  release: string;
  /** Run through `/bin/sh -c`, so quoting, `&&` and `exec` work as in a shell. */
  command: string;
  cwd: string;
  /** The whole environment of the process (nothing is inherited from the agent). */
  env: Record<string, string>;
  restart: RestartPolicy;
  /** Where the running group's pid and start time are kept, to find it after a crash. */
  pidPath: string;
  output: (stream: "stdout" | "stderr", line: string) => void;
  log: Logger;
  /** First restart delay; doubles per consecutive quick failure up to `backoffMaxMs`. */
  backoffMinMs: number;
  backoffMaxMs: number;
  /** Time between SIGTERM and SIGKILL when stopping the group. */
  killGraceMs: number;
  /** Longer output lines are split. */
  maxLineBytes: number;
}

/** How one run of the process ended. */
export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** e.g. "exited with code 1", "killed by SIGSEGV", "could not start: ..." */
  reason: string;
}

/**
 * Runs a release's command in its own process group (`detached`), restarts it per policy with
 * exponential backoff, sends each output line to `output`, and on stop() ends the whole group
 * (SIGTERM, then SIGKILL after the grace). The group's pid and start time are written to the
 * pidfile at every start, so a restarted agent can stop an orphan (see stopOrphan).
 */
export class Supervisor {
  /** Completed runs, i.e. how often the process exited since start(). */
  exits = 0;
  lastExit: ExitInfo | undefined;
  private child: ChildProcess | undefined;
  private stopping = false;
  private failures = 0;
  private restarting = false;
  private lastPid: number | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private readonly exitListeners = new Set<(e: ExitInfo) => void>();
  private exited: Promise<void> = Promise.resolve();
  private spawning: Promise<void> = Promise.resolve();

  constructor(readonly opts: SupervisorOptions) {}

  /** `running`, `restarting` (waiting out the backoff), `exited` (for good, per policy) or `stopped`. */
  get state(): "running" | "restarting" | "exited" | "stopped" {
    if (this.stopping) return "stopped";
    if (this.child) return "running";
    return this.restarting ? "restarting" : "exited";
  }

  /** The pid of the running group leader, if one runs. */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the first run; resolves once it was spawned and the pidfile is written. */
  async start(): Promise<void> {
    this.stopping = false;
    this.spawning = this.spawnOnce();
    await this.spawning;
  }

  /** Calls `fn` at every exit of the process; returns a function that unsubscribes. */
  onExit(fn: (e: ExitInfo) => void): () => void {
    this.exitListeners.add(fn);
    return () => void this.exitListeners.delete(fn);
  }

  /** Stops restarting and ends the whole process group; removes the pidfile. */
  async stop(): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    await this.spawning.catch(() => undefined);
    const child = this.child;
    // With the leader gone, members of its group may be left (handleExit is stopping them).
    const pgid = child?.pid ?? this.lastPid;
    if (pgid !== undefined) await stopGroup(pgid, this.opts.killGraceMs);
    // A process that left the group (setsid) may still hold the pipes: stop reading them then.
    const late = setTimeout(() => {
      child?.stdout?.destroy();
      child?.stderr?.destroy();
    }, 1_000);
    await this.exited;
    clearTimeout(late);
    await removePidRecord(this.opts.pidPath);
  }

  private async spawnOnce(): Promise<void> {
    const o = this.opts;
    const started = Date.now();
    const child = spawn("/bin/sh", ["-c", o.command], {
      cwd: o.cwd,
      env: o.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.lastPid = child.pid;
    const emit = (stream: "stdout" | "stderr", line: string): void => {
      try {
        o.output(stream, line);
      } catch (e) {
        o.log.error("output handler failed", { error: (e as Error).message });
      }
    };
    const out = new LineSplitter(o.maxLineBytes, (l) => emit("stdout", l));
    const err = new LineSplitter(o.maxLineBytes, (l) => emit("stderr", l));
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    let ended = false;
    const ended1 = (info: ExitInfo): void => {
      if (ended) return;
      ended = true;
      void this.handleExit(child, info, Date.now() - started);
    };
    // 'exit' rather than 'close': a grandchild may hold the pipes after the leader is gone.
    child.once("exit", (code, signal) =>
      ended1({ code, signal, reason: signal ? `killed by ${signal}` : `exited with code ${code}` }),
    );
    child.once("error", (e) => ended1({ code: null, signal: null, reason: `could not start: ${e.message}` }));
    this.exited = new Promise<void>((resolve) => {
      child.once("close", () => {
        out.end();
        err.end();
        resolve();
      });
      child.once("error", () => resolve());
    });
    if (child.pid !== undefined) {
      const st = await procStat(child.pid);
      await writePidRecord(o.pidPath, { pid: child.pid, startTime: st?.startTime ?? "", release: o.release });
      o.log.info("process started", { pid: child.pid });
    }
  }

  private async handleExit(child: ChildProcess, info: ExitInfo, ranMs: number): Promise<void> {
    const o = this.opts;
    const failed = info.code !== 0 || info.signal !== null;
    this.restarting = !this.stopping && (o.restart === "always" || (o.restart === "on-failure" && failed));
    this.exits++;
    this.lastExit = info;
    if (this.child === child) this.child = undefined;
    for (const fn of this.exitListeners) fn(info);
    if (this.stopping) return; // stop() ends the group itself
    o.log.warn("process ended", { reason: info.reason });
    try {
      // The leader is gone; whatever it started in its group must not outlive it.
      if (child.pid !== undefined && (await groupAlive(child.pid))) await stopGroup(child.pid, o.killGraceMs);
    } catch (e) {
      o.log.error("could not stop the rest of the process group", { error: (e as Error).message });
    }
    // The group is empty now; its id may be handed out again, so never signal it later.
    if (this.lastPid === child.pid) this.lastPid = undefined;
    if (!this.restarting || this.stopping) return;
    this.failures = ranMs > o.backoffMaxMs ? 0 : this.failures + 1;
    const delay = Math.min(o.backoffMaxMs, o.backoffMinMs * 2 ** Math.max(0, this.failures - 1));
    this.restartTimer = setTimeout(() => {
      if (this.stopping) return;
      this.spawning = this.spawnOnce().catch((e: unknown) => {
        o.log.error("restart failed", { error: (e as Error).message });
      });
    }, delay);
  }
}
