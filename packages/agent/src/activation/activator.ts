/**
 * Activation is pluggable (docs/architecture.md, decision 6): one Activator per release kind (bundle, nixos,
 * agent). The release pipeline (TUF verification, download, hash check, staging) hands an
 * activator only what it has verified; the activator installs it, checks health, and confirms or
 * rolls back. Every activator keeps a journal in its own directory so that a `kill -9` at any
 * step, followed by `recover()`, ends on the old or the new version, never neither.
 */
import type { ReleaseMeta } from "@flotilla/protocol/agent";

/** A verified release, ready to activate. */
export interface ActivationRequest {
  meta: ReleaseMeta;
  /** sha256 (hex) of the artifact, as signed. */
  sha256: string;
  /**
   * bundle/agent: the staged artifact file, already hash-checked; the activator may move or
   * unpack it but must not trust anything that is not in it. nixos: the `.nixos.json` artifact
   * with the closure manifest the fetched closure must match.
   */
  artifactPath?: string;
}

/** Steps an activation reports, in order; `failed` and `rolled-back` end it, as does `healthy`. */
export type ActivationStep = "activating" | "health-checking" | "healthy" | "failed" | "rolled-back";

/** What an activator tells the rest of the agent while it works. */
export interface ActivationEvents {
  /** A step was reached; `detail` says why on failure or rollback. */
  step(step: ActivationStep, detail?: string): void;
  /** A line a supervised process wrote; `unit` is the release name. */
  output(unit: string, stream: "stdout" | "stderr", line: string): void;
  /**
   * Resolves once the agent has reached the coordinator again over its own outbound connection
   * after `sinceMs`; rejects on `signal`. NixOS activations confirm with it; others may ignore it.
   */
  reachedCoordinator(sinceMs: number, signal: AbortSignal): Promise<void>;
}

/** What is installed and running for one release name. */
export interface InstalledRelease {
  name: string;
  version: string;
  counter: number;
  sha256: string;
}

export type ActivationOutcome =
  | { outcome: "healthy"; current: InstalledRelease }
  | { outcome: "rolled-back"; error: string; current: InstalledRelease; interrupted?: true }
  /** Nothing runs for this name now (a first install that failed), or rollback itself failed. */
  | { outcome: "failed"; error: string; current: InstalledRelease | undefined; interrupted?: true };
// `interrupted` (from recover() only): the agent stopped before the new release was switched to,
// so nothing of it ran and nothing speaks against it; the agent tries the activation again.

/**
 * What an admin asks of an installed release (`flotilla device restart|stop|start|undeploy`):
 * `remove` stops it and removes its files, and its data directory too with `purgeData`.
 */
export type ControlAction = "stop" | "start" | "restart" | "remove";

export interface Activator {
  readonly kind: ReleaseMeta["kind"];
  /** Whether this machine can run such releases (reported as a capability). */
  available(): Promise<boolean>;
  /**
   * Called once at agent start, before any activate(): finishes or undoes an activation a crash
   * interrupted (re-running health checks where needed) and restarts what should be running.
   * Returns what it ended on, per release name, with the outcome of any interrupted activation.
   */
  recover(events: ActivationEvents): Promise<Map<string, ActivationOutcome>>;
  /** Installs a release, checks health, confirms or rolls back. One activation at a time per name. */
  activate(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome>;
  /** What is installed now, per release name. */
  installed(): Promise<InstalledRelease[]>;
  /**
   * Carries out a control command for one release name; throws when it cannot. A stopped
   * release stays stopped across agent restarts until started, restarted or activated anew.
   * Activators without it cannot be controlled.
   */
  control?(name: string, action: ControlAction, opts: { purgeData: boolean }, events: ActivationEvents): Promise<void>;
  /** Stops supervised processes (agent shutdown). They restart at the next recover(). */
  close(): Promise<void>;
}
