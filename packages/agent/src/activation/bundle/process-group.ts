import { readdir, readFile } from "node:fs/promises";
import { readJsonIfExists } from "@flotilla/protocol/agent";
import { removeDurable, writeFileDurable } from "../../durable.ts";

/** What `pid.json` records of a supervised process group, to find it again after a crash. */
export interface PidRecord {
  /** The group leader's pid, which is also the group id (the process runs in its own group). */
  pid: number;
  /** The leader's start time in clock ticks since boot (/proc/<pid>/stat field 22). */
  startTime: string;
  /** The release id it runs. */
  release: string;
}

interface ProcStat {
  state: string;
  pgid: number;
  startTime: string;
}

/** Parses /proc/<pid>/stat; undefined when the process is gone. */
export async function procStat(pid: number | string): Promise<ProcStat | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or parentheses itself.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const pgid = Number(fields[2]);
  const startTime = fields[19];
  if (state === undefined || startTime === undefined || !Number.isInteger(pgid)) return undefined;
  return { state, pgid, startTime };
}

/**
 * Whether any live (non-zombie) process belongs to group `pgid`. Zombies count as gone: an
 * orphan's reaper may be slow, and a zombie holds no port or file.
 */
export async function groupAlive(pgid: number): Promise<boolean> {
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const st = await procStat(entry);
    if (st && st.pgid === pgid && st.state !== "Z" && st.state !== "X") return true;
  }
  return false;
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
  }
}

async function waitGone(pgid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (!(await groupAlive(pgid))) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
}

/**
 * Stops a whole process group: SIGTERM, then SIGKILL after `graceMs`, then waits (bounded) until
 * no live member is left. Throws if the group survives SIGKILL for 10 s.
 */
export async function stopGroup(pgid: number, graceMs: number): Promise<void> {
  signalGroup(pgid, "SIGTERM");
  if (await waitGone(pgid, graceMs)) return;
  signalGroup(pgid, "SIGKILL");
  if (!(await waitGone(pgid, 10_000))) throw new Error(`process group ${pgid} survived SIGKILL`);
}

/** The pidfile, or undefined when it is missing or unreadable. */
export function readPidRecord(path: string): Promise<PidRecord | undefined> {
  return readJsonIfExists<PidRecord>(path).catch(() => undefined);
}

/** Writes the pidfile durably (a crash right after must still find the group). */
export function writePidRecord(path: string, rec: PidRecord): Promise<void> {
  return writeFileDurable(path, JSON.stringify(rec) + "\n");
}

/** Removes the pidfile durably, once its group is gone. */
export function removePidRecord(path: string): Promise<void> {
  return removeDurable(path);
}

/**
 * Stops the process group a previous agent left running (it was killed with `kill -9`), if
 * the pidfile names a process that still exists with the same start time, so a recycled pid is
 * never signalled. Removes the pidfile. Returns whether something was stopped.
 */
export async function stopOrphan(pidPath: string, graceMs: number): Promise<boolean> {
  const rec = await readPidRecord(pidPath);
  if (!rec) return false;
  let stopped = false;
  const st = Number.isInteger(rec.pid) && rec.pid > 1 ? await procStat(rec.pid) : undefined;
  if (st && st.startTime === rec.startTime && st.pgid === rec.pid) {
    await stopGroup(rec.pid, graceMs);
    stopped = true;
  } else if ((st === undefined || st.state === "Z") && Number.isInteger(rec.pid) && rec.pid > 1 && (await groupAlive(rec.pid))) {
    // The leader is gone but members of its group live on (e.g. a shell's children): Linux does
    // not hand out a pid still used as a group id, so they are ours.
    await stopGroup(rec.pid, graceMs);
    stopped = true;
  }
  await removePidRecord(pidPath);
  return stopped;
}

/**
 * Stops every process group with a member whose environment holds `FLOTILLA_RELEASE_DIR=` under
 * `releasesDir`: the copies of a release name a crashed agent left running even where the
 * pidfile could not tell (a crash between spawning and writing it). Reads /proc/<pid>/environ of
 * every process, so it runs once per name at recovery, not per activation. Returns the groups.
 */
export async function sweepReleaseProcesses(releasesDir: string, graceMs: number): Promise<number[]> {
  const marker = `FLOTILLA_RELEASE_DIR=${releasesDir}/`;
  const groups = new Set<number>();
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    let environ: string;
    try {
      environ = await readFile(`/proc/${entry}/environ`, "utf8");
    } catch {
      continue;
    }
    if (!environ.split("\0").some((e) => e.startsWith(marker))) continue;
    const st = await procStat(entry);
    if (st && st.state !== "Z" && st.pgid > 1 && st.pgid !== process.pid) groups.add(st.pgid);
  }
  for (const pgid of groups) await stopGroup(pgid, graceMs);
  return [...groups];
}
