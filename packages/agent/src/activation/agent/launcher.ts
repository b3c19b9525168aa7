/**
 * The launcher (docs/self-update.md): `flotilla agent` with self-update on, as the service
 * manager starts it. It runs the agent as a child process (the confirmed staged executable, or
 * its own program) and is the only part that decides which executable runs; nothing of a new
 * executable runs in it. A handover puts the new executable on probation: it must confirm
 * (reach the coordinator) within the confirm window, or the launcher restores the previous one.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { access, constants, mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { AGENT_NODE_OPTIONS, readJsonIfExists, writeJsonAtomic, type Logger } from "@flotilla/protocol/agent";
import { procStat, removePidRecord, stopGroup, stopOrphan, writePidRecord } from "../bundle/process-group.ts";
import {
  afterRestart,
  beginHandover,
  confirmHandover,
  executablePath,
  rollBackHandover,
  runningId,
  STAGED_ID,
  toRun,
  versionsDir,
  type LauncherState,
  type StagedExecutable,
} from "./launcher-state.ts";
import type { LauncherReply, LauncherRequest } from "./link.ts";

/** Environment variable that tells a child it runs under a launcher, and which executable it is. */
export const LAUNCHED_ENV = "FLOTILLA_AGENT_EXECUTABLE";

/** Environment variable that marks a child with its launcher's `agent-versions` directory. */
export const LAUNCHER_DIR_ENV = "FLOTILLA_AGENT_LAUNCHER_DIR";

export { AGENT_NODE_OPTIONS };

/** NODE_OPTIONS with the launcher's AGENT_NODE_OPTIONS appended. */
export function withAgentNodeOptions(nodeOptions: string | undefined): string {
  return nodeOptions ? `${nodeOptions} ${AGENT_NODE_OPTIONS}` : AGENT_NODE_OPTIONS;
}

/** NODE_OPTIONS as it was before the launcher appended AGENT_NODE_OPTIONS (undefined: unset). */
export function withoutAgentNodeOptions(nodeOptions: string | undefined): string | undefined {
  if (nodeOptions === undefined || !nodeOptions.endsWith(AGENT_NODE_OPTIONS)) return nodeOptions;
  const before = nodeOptions.slice(0, -AGENT_NODE_OPTIONS.length).trimEnd();
  return before === "" ? undefined : before;
}

export interface LauncherOptions {
  /** The agent's state directory; the launcher keeps `agent-versions/` in it. */
  stateDir: string;
  /** The installed executable's command, before the CLI's arguments (e.g. [/usr/bin/flotilla]). */
  installedCommand: string[];
  /** The CLI's arguments, passed to every executable it runs (e.g. ["agent", "--config", FILE]). */
  args: string[];
  /** The children's environment (LAUNCHED_ENV is added). */
  env: NodeJS.ProcessEnv;
  /** How long an executable on probation has to confirm. */
  confirmWindowMs: number;
  /** SIGTERM-to-SIGKILL grace when stopping a child. Default 10 s. */
  stopGraceMs?: number;
  log: Logger;
}

type Event =
  /** `error`: it could not be started at all. */
  | { type: "exit"; child: ChildProcess; code: number | null; signal: NodeJS.Signals | null; error?: string }
  | { type: "request"; child: ChildProcess; req: LauncherRequest }
  | { type: "deadline"; child: ChildProcess }
  | { type: "stop" };

/**
 * Runs agents until `signal` aborts (then stops the child and resolves 0) or an agent that is
 * not on probation exits (resolves its exit code, so the service manager restarts the whole).
 */
export async function runLauncher(opts: LauncherOptions, signal: AbortSignal): Promise<number> {
  const dir = versionsDir(opts.stateDir);
  const statePath = join(dir, "launcher.json");
  const pidPath = join(dir, "child.json");
  const grace = opts.stopGraceMs ?? 10_000;
  const log = opts.log.child({ component: "launcher" });
  await mkdir(dir, { recursive: true, mode: 0o755 });
  // A child of a launcher that was killed may still run: never two agents on one state directory.
  const recorded = await stopOrphan(pidPath, grace);
  const unrecorded = await sweepAgents(dir, grace);
  if (recorded || unrecorded.length > 0) log.warn("stopped the agents a previous launcher left running");

  const loaded = (await readJsonIfExists<LauncherState>(statePath)) ?? {};
  let state = afterRestart(loaded);
  if (state !== loaded) {
    log.warn("a handover was interrupted; restoring the previous agent", { reason: state.last?.reason });
    await writeJsonAtomic(statePath, state);
    await prune(dir, state);
  }
  const save = async (next: LauncherState) => {
    await writeJsonAtomic(statePath, next);
    state = next;
  };

  const events: Event[] = [];
  let wake: (() => void) | undefined;
  const push = (e: Event) => {
    events.push(e);
    wake?.();
  };
  const onStop = () => push({ type: "stop" });
  signal.addEventListener("abort", onStop);
  if (signal.aborted) return 0;
  const next = async (): Promise<Event> => {
    while (events.length === 0) await new Promise<void>((r) => (wake = r));
    return events.shift()!;
  };

  try {
    for (;;) {
      const exe = toRun(state);
      const probation = state.pending !== undefined;
      const child = startChild(opts, exe, push, log);
      const exited = new Promise<void>((r) => {
        child.once("exit", () => r());
        child.once("error", () => child.pid === undefined && r());
      });
      const stat = child.pid !== undefined ? await procStat(child.pid) : undefined;
      if (child.pid !== undefined && stat) await writePidRecord(pidPath, { pid: child.pid, startTime: stat.startTime, release: runningId(state) });
      const timer = probation ? setTimeout(() => push({ type: "deadline", child }), opts.confirmWindowMs) : undefined;
      const stopChild = async () => {
        if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) await stopGroup(child.pid, grace).catch(() => undefined);
        await exited;
        await removePidRecord(pidPath);
      };
      try {
        for (;;) {
          const e = await next();
          if (e.type === "stop") {
            await stopChild();
            return 0;
          }
          if (e.child !== child) continue;
          if (e.type === "request") {
            const outcome = await handle(e.req);
            reply(child, e.req.seq, outcome.error);
            if (outcome.handover) {
              log.info("handing over to a new agent", { version: state.pending?.to.version });
              await stopChild();
              break;
            }
            if (outcome.confirmed) {
              clearTimeout(timer);
              await prune(dir, state);
            }
            continue;
          }
          if (e.type === "deadline" && state.pending) {
            const reason = `the new agent ${state.pending.to.version} did not reach the coordinator within ${duration(opts.confirmWindowMs)}`;
            log.warn("restoring the previous agent", { reason });
            await stopChild();
            await save(rollBackHandover(state, reason));
            await prune(dir, state);
            break;
          }
          if (e.type === "exit") {
            await removePidRecord(pidPath);
            const how = e.error ? `could not be started (${e.error})` : e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
            if (state.pending) {
              const reason = `the new agent ${state.pending.to.version} ${how} before it reached the coordinator`;
              log.warn("restoring the previous agent", { reason });
              await save(rollBackHandover(state, reason));
              await prune(dir, state);
              break;
            }
            log.info(`the agent ${how}`);
            return e.code ?? 1;
          }
        }
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    signal.removeEventListener("abort", onStop);
  }

  async function handle(req: LauncherRequest): Promise<{ error?: string; handover?: boolean; confirmed?: boolean }> {
    try {
      if (req.type === "switch") {
        const to = checkStaged(req.to);
        await access(executablePath(opts.stateDir, to.id), constants.X_OK);
        await save(beginHandover(state, to));
        return { handover: true };
      }
      if (req.type === "confirm") {
        await save(confirmHandover(state, req.id));
        log.info("the new agent confirmed", { version: state.current?.version });
        return { confirmed: true };
      }
      return { error: "unknown request" };
    } catch (err) {
      return { error: err instanceof Error ? err.message : String(err) };
    }
  }
}

/** Validates a staged executable named in a message (it comes from another process). */
function checkStaged(x: StagedExecutable): StagedExecutable {
  if (!x || typeof x.id !== "string" || !STAGED_ID.test(x.id)) throw new Error("invalid staged executable id");
  if (typeof x.name !== "string" || typeof x.version !== "string" || !Number.isInteger(x.counter) || typeof x.sha256 !== "string") {
    throw new Error("invalid staged executable");
  }
  return { id: x.id, name: x.name, version: x.version, counter: x.counter, sha256: x.sha256 };
}

function startChild(opts: LauncherOptions, exe: StagedExecutable | undefined, push: (e: Event) => void, log: Logger): ChildProcess {
  const [program, ...pre] = exe ? [executablePath(opts.stateDir, exe.id)] : opts.installedCommand;
  log.info("starting the agent", { version: exe?.version ?? "installed", executable: program });
  // Its own process group, so that stopping it stops whatever it runs in the same group; the
  // services of bundle releases have groups of their own and outlive it, as they do any agent restart.
  const child = spawn(program!, [...pre, ...opts.args], {
    env: {
      ...opts.env,
      [LAUNCHED_ENV]: exe?.id ?? "installed",
      [LAUNCHER_DIR_ENV]: versionsDir(opts.stateDir),
      NODE_OPTIONS: withAgentNodeOptions(opts.env.NODE_OPTIONS),
    },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
    detached: true,
  });
  child.on("message", (m) => {
    const req = m as Partial<LauncherRequest>;
    if ((req?.type === "switch" || req?.type === "confirm") && typeof req.seq === "number") push({ type: "request", child, req: req as LauncherRequest });
  });
  child.on("exit", (code, signal) => push({ type: "exit", child, code, signal }));
  // A program that cannot be started at all (ENOENT, EACCES) exits as far as the launcher cares.
  child.on("error", (err) => {
    log.warn("could not start the agent", { err: err.message });
    if (child.pid === undefined) push({ type: "exit", child, code: 127, signal: null, error: (err as NodeJS.ErrnoException).code ?? err.message });
  });
  return child;
}

/**
 * Stops every process group with a member marked as an agent of the launcher of `dir`: those a
 * killed launcher left, even one it started but had not recorded in child.json yet. Reads
 * /proc/<pid>/environ of every process, once per launcher start.
 */
export async function sweepAgents(dir: string, graceMs: number): Promise<number[]> {
  const marker = `${LAUNCHER_DIR_ENV}=${dir}`;
  const own = (await procStat(process.pid))?.pgid;
  const groups = new Set<number>();
  for (const entry of await readdir("/proc").catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const environ = await readFile(`/proc/${entry}/environ`, "utf8").catch(() => "");
    if (!environ.split("\0").includes(marker)) continue;
    const st = await procStat(entry);
    if (st && st.state !== "Z" && st.pgid > 1 && st.pgid !== own) groups.add(st.pgid);
  }
  for (const pgid of groups) await stopGroup(pgid, graceMs);
  return [...groups];
}

function reply(child: ChildProcess, seq: number, error?: string): void {
  const msg: LauncherReply = { type: "reply", seq, ...(error !== undefined && { error }) };
  if (child.connected) child.send(msg, () => undefined);
}

/** Removes staged executables other than the current one (after a handover ended). */
async function prune(dir: string, state: LauncherState): Promise<void> {
  const keep = new Set([state.current?.id]);
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (STAGED_ID.test(name) && !keep.has(name)) await rm(join(dir, name), { recursive: true, force: true });
  }
}

function duration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`;
}
