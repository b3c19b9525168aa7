/**
 * What the launcher remembers across restarts (`<state-dir>/agent-versions/launcher.json`) and
 * the transitions between its states, as pure functions. The launcher process is the only
 * writer of this file; agents it runs read it and ask for changes over their IPC channel.
 * See docs/self-update.md.
 */
import { join } from "node:path";

/** A staged agent executable: the release it came from and where it lies. */
export interface StagedExecutable {
  /** `<counter>-<first 16 hex digits of sha256>`: its directory under `agent-versions/`. */
  id: string;
  /** The release name and version it was installed from. */
  name: string;
  version: string;
  counter: number;
  sha256: string;
}

/** The launcher's durable state. An empty object: run the installed executable. */
export interface LauncherState {
  /** The staged executable confirmed last; absent: the installed one (the launcher's own program). */
  current?: StagedExecutable;
  /** A handover asked for and not yet confirmed: `to` runs on probation, `from` is what to restore. */
  pending?: { to: StagedExecutable; from?: StagedExecutable };
  /** How the last handover ended, for the agent to report (the release's final step). */
  last?: { to: StagedExecutable; outcome: "healthy" | "rolled-back"; reason?: string };
}

/** The id of the executable the launcher itself was started from (the installed one). */
export const INSTALLED = "installed";

/** The directory of staged executables and the launcher's state, under the agent's state dir. */
export function versionsDir(stateDir: string): string {
  return join(stateDir, "agent-versions");
}

/** The staged executable's path: computed from its id, never taken from a message. */
export function executablePath(stateDir: string, id: string): string {
  return join(versionsDir(stateDir), id, "flotilla");
}

/** Staged ids are what stagedId() makes; anything else (`..`, `/`) is refused. */
export const STAGED_ID = /^[1-9][0-9]{0,15}-[0-9a-f]{16}$/;

export function stagedId(counter: number, sha256: string): string {
  return `${counter}-${sha256.slice(0, 16)}`;
}

/** What should run now: the executable on probation, else the confirmed one (undefined: the installed one). */
export function toRun(s: LauncherState): StagedExecutable | undefined {
  return s.pending ? s.pending.to : s.current;
}

/** The id of toRun(s). */
export function runningId(s: LauncherState): string {
  return toRun(s)?.id ?? INSTALLED;
}

/** Starts a handover to `to`; throws when one is in progress or `to` already runs. */
export function beginHandover(s: LauncherState, to: StagedExecutable): LauncherState {
  if (s.pending) throw new Error(`a handover to ${s.pending.to.version} is in progress`);
  if (s.current?.id === to.id) throw new Error(`${to.version} runs already`);
  return { ...(s.current && { current: s.current }), pending: { to, ...(s.current && { from: s.current }) }, ...(s.last && { last: s.last }) };
}

/** The executable on probation (`id`) confirmed itself: it becomes the current one. */
export function confirmHandover(s: LauncherState, id: string): LauncherState {
  if (!s.pending || s.pending.to.id !== id) throw new Error(`no handover to ${id} is waiting for confirmation`);
  return { current: s.pending.to, last: { to: s.pending.to, outcome: "healthy" } };
}

/** The handover failed (or was interrupted): back to what ran before it. */
export function rollBackHandover(s: LauncherState, reason: string): LauncherState {
  if (!s.pending) return s;
  const { to, from } = s.pending;
  return { ...(from && { current: from }), last: { to, outcome: "rolled-back", reason } };
}

/**
 * The state a starting launcher adopts: a handover still pending was interrupted (the launcher
 * was stopped or killed before the new executable confirmed), so the previous executable is
 * restored; it never starts an unconfirmed executable without a confirm window watching it.
 */
export function afterRestart(s: LauncherState): LauncherState {
  return s.pending ? rollBackHandover(s, `the agent was stopped during the handover to ${s.pending.to.version}`) : s;
}
