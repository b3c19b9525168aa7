/**
 * Activates NixOS system closures (docs/architecture.md, decision 6): fetch the closure from the
 * organization's binary cache with signatures checked, check every path of it against the
 * closure manifest in the release's signed artifact, `nix-env --profile P --set PATH`,
 * `PATH/bin/switch-to-configuration MODE`, then a confirm window in which the agent must reach
 * the coordinator again over its own connection and pass the release's health checks.
 * Otherwise the previously active store path is set and switched to again (not `--rollback`,
 * which may pick another generation).
 *
 * A journal written before every step that changes the machine lets `recover()` finish or undo
 * an activation a crash interrupted: before the switch completed it rolls back; during the
 * confirm window it runs the window again.
 */
import { access, constants, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { closureMismatch, onAbort, parseNixosArtifact, parsePathInfoJson, readJsonIfExists, writeJsonAtomic, type ClosureEntry, type ReleaseMeta } from "@flotilla/protocol/agent";
import { DEFAULT_NIXOS_PROFILE } from "../../config.ts";
import type { ActivationEvents, ActivationOutcome, ActivationRequest, Activator, ControlAction, InstalledRelease } from "../activator.ts";
import { runHealthChecks } from "./health.ts";
import { NixTool } from "./nix.ts";
import { runProgram } from "./run.ts";

/** A Nix public key as `trusted-public-keys` takes it: `name:base64` of 32 bytes. */
const NIX_PUBLIC_KEY = /^[A-Za-z0-9._-]{1,128}:[A-Za-z0-9+/]{43}=$/;


export interface NixosActivatorOptions {
  /** The activator's own directory: journal, installed record, netrc. */
  stateDir: string;
  /** The organization's binary cache on the coordinator, e.g. https://coord:7700/nix/acme. */
  cacheUrl: string | (() => string);
  /** The organization's Nix public keys (`name:base64`); nix trusts these and nothing else. */
  trustedPublicKeys: (meta: ReleaseMeta) => string[] | Promise<string[]>;
  /** The agent's current session token; written into a 0600 netrc before every fetch. */
  token: () => string | Promise<string>;
  /**
   * PEM file of the certificate(s) nix trusts for an https cache instead of the system's CA
   * bundle: the coordinator's self-signed certificate, which the agent has pinned.
   */
  caCertFile?: string;
  /** The system profile (default /nix/var/nix/profiles/system). */
  profile?: string;
  /** Directory of `nix` and `nix-env` (default: PATH). */
  nixBinDir?: string;
  /** Confirm window when the release's health spec sets none (default 60 s). */
  confirmWindowMs?: number;
  /** Longest time a closure may take to fetch (default 1 h). */
  fetchTimeoutMs?: number;
  /** Environment for nix, switch scripts and health commands (default: the agent's). */
  env?: NodeJS.ProcessEnv;
  /** The systemctl program that restarts, stops and starts the units a release declares (default: systemctl on PATH). */
  systemctl?: string;
}

/** What the journal records while an activation changes the machine. */
interface Journal {
  phase: "switching" | "confirming";
  meta: ReleaseMeta;
  sha256: string;
  /** The store path active before, if any. */
  previous: string | null;
  /** The release that was installed before, if Flotilla installed it. */
  previousRelease: InstalledRelease | null;
}

interface Installed extends InstalledRelease {
  storePath: string;
  /** The systemd units the release declares (ReleaseMeta.units). */
  units?: string[];
}

class Failure extends Error {}

export class NixosActivator implements Activator {
  readonly kind = "nixos" as const;
  private readonly nix: NixTool;
  private readonly profile: string;
  private readonly journalPath: string;
  private readonly installedPath: string;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: NixosActivatorOptions) {
    this.profile = opts.profile ?? DEFAULT_NIXOS_PROFILE;
    this.journalPath = join(opts.stateDir, "nixos-journal.json");
    this.installedPath = join(opts.stateDir, "nixos-installed.json");
    this.nix = new NixTool({ binDir: opts.nixBinDir, env: opts.env, netrcPath: join(opts.stateDir, "nix-netrc"), caCertFile: opts.caCertFile });
  }

  async available(): Promise<boolean> {
    return (await this.nix.present()) && (await this.nix.profileWritable(this.profile));
  }

  async installed(): Promise<InstalledRelease[]> {
    const i = await readJsonIfExists<Installed>(this.installedPath);
    return i ? [release(i)] : [];
  }

  async close(): Promise<void> {}

  /**
   * Activates a verified NixOS release. Aborting `signal` stops a fetch (nothing changes) but
   * never a running switch; in the confirm window it rejects and keeps the journal, so that
   * recover() at the next start confirms or rolls back.
   */
  activate(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    return this.serialize(() => this.run(req, events, signal));
  }

  recover(events: ActivationEvents): Promise<Map<string, ActivationOutcome>> {
    return this.serialize(async () => {
      const out = new Map<string, ActivationOutcome>();
      const journal = await readJsonIfExists<Journal>(this.journalPath);
      if (journal) {
        const outcome =
          journal.phase === "confirming" && (await this.nix.current(this.profile)) === journal.meta.storePath
            ? await this.confirmOrRollBack(journal, events, new AbortController().signal)
            : await this.rollBack(journal, "the agent stopped while switching", events);
        out.set(journal.meta.name, outcome);
      } else {
        for (const r of await this.installed()) out.set(r.name, { outcome: "healthy", current: r });
      }
      return out;
    });
  }

  /**
   * Restarts, stops or starts the systemd units the installed release declares. A NixOS system
   * is not removed: undeploying it is refused (deploy another system instead); other names are
   * none of this activator's business.
   */
  control(name: string, action: ControlAction, _opts: { purgeData: boolean }, events: ActivationEvents): Promise<void> {
    return this.serialize(async () => {
      const i = await readJsonIfExists<Installed>(this.installedPath);
      if (i?.name !== name) {
        if (action === "remove") return;
        throw new Error(`no ${name} release is installed`);
      }
      if (action === "remove") throw new Error("a NixOS system cannot be undeployed: deploy another system instead");
      if (!i.units?.length) throw new Error(`${name} ${i.version} declares no systemd units to ${action} (release create --unit)`);
      const r = await runProgram(this.opts.systemctl ?? "systemctl", [action, "--", ...i.units], {
        env: this.opts.env,
        onLine: (stream, line) => events.output(name, stream, line),
      });
      if (r.code !== 0) throw new Error(`systemctl ${action} ${i.units.join(" ")} exited with ${r.code}: ${lastLine(r.tail)}`);
    });
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.queue.then(fn, fn);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async run(req: ActivationRequest, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    const { meta } = req;
    const storePath = meta.storePath;
    const before = await readJsonIfExists<Installed>(this.installedPath);
    const notChanged = (error: string): ActivationOutcome => {
      events.step(before ? "rolled-back" : "failed", error);
      return before ? { outcome: "rolled-back", error, current: release(before) } : { outcome: "failed", error, current: undefined };
    };
    if (meta.kind !== "nixos" || !storePath) return notChanged("not a NixOS release with a store path");
    events.step("activating");
    const output = (stream: "stdout" | "stderr", line: string) => events.output(meta.name, stream, line);

    let pinned: ClosureEntry[];
    try {
      pinned = await pinnedClosure(req.artifactPath, storePath);
    } catch (err) {
      return notChanged(err instanceof Error ? err.message : String(err));
    }
    const keys = (await this.opts.trustedPublicKeys(meta)).filter((k) => NIX_PUBLIC_KEY.test(k));
    if (!keys.length) return notChanged("the organization has no Nix public key to trust");
    const fetchSignal = AbortSignal.any([signal, AbortSignal.timeout(this.opts.fetchTimeoutMs ?? 3_600_000)]);
    try {
      const fetched = await this.nix.fetch(typeof this.opts.cacheUrl === "string" ? this.opts.cacheUrl : this.opts.cacheUrl(), storePath, keys, await this.opts.token(), fetchSignal, output);
      if (fetched.code !== 0) return notChanged(`fetching ${storePath} failed: ${lastLine(fetched.tail)}`);
    } catch (err) {
      return notChanged(`fetching ${storePath} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    // The cache's narinfos are signed by keys the coordinator holds: the bytes nix accepted count
    // only if they are the ones the admins signed into the release.
    const info = await this.nix.pathInfo(storePath);
    let mismatch: string | undefined;
    try {
      if (info.code !== 0) throw new Error(lastLine(info.tail));
      mismatch = closureMismatch(pinned, parsePathInfoJson(info.stdout));
    } catch (err) {
      mismatch = `nix path-info ${storePath} failed: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (mismatch) return notChanged(`the closure of ${storePath} is not the one the release pins, nothing was switched: ${mismatch}`);
    const script = join(storePath, "bin/switch-to-configuration");
    try {
      await access(script, constants.X_OK);
    } catch {
      return notChanged(`${storePath} has no bin/switch-to-configuration`);
    }

    const journal: Journal = {
      phase: "switching",
      meta,
      sha256: req.sha256,
      previous: (await this.nix.current(this.profile)) ?? null,
      previousRelease: before ? release(before) : null,
    };
    await writeJsonAtomic(this.journalPath, journal);
    try {
      const set = await this.nix.setProfile(this.profile, storePath, output);
      if (set.code !== 0) throw new Failure(`nix-env --set failed: ${lastLine(set.tail)}`);
      const sw = await runProgram(script, [meta.nixosMode], { env: this.opts.env, onLine: output });
      if (sw.code !== 0) throw new Failure(`switch-to-configuration ${meta.nixosMode} exited with ${sw.code}`);
    } catch (err) {
      return this.rollBack(journal, err instanceof Failure ? err.message : String(err), events);
    }
    journal.phase = "confirming";
    await writeJsonAtomic(this.journalPath, journal);
    return this.confirmOrRollBack(journal, events, signal);
  }

  /** The confirm window: reach the coordinator again and pass the health checks, or roll back. */
  private async confirmOrRollBack(journal: Journal, events: ActivationEvents, signal: AbortSignal): Promise<ActivationOutcome> {
    const { meta } = journal;
    events.step("health-checking");
    const since = Date.now();
    // A release's own health spec sets its window; otherwise the agent's --nixos-switch-timeout.
    const windowMs = meta.health ? meta.health.windowSeconds * 1000 : (this.opts.confirmWindowMs ?? 60_000);
    const window = new AbortController();
    const timer = setTimeout(() => window.abort(), windowMs);
    const unlisten = onAbort(signal, () => window.abort());
    try {
      await Promise.all([
        events.reachedCoordinator(since, window.signal).catch(() => {
          throw new Failure(`the agent did not reach the coordinator within ${Math.round(windowMs / 1000)} s of the switch`);
        }),
        runHealthChecks(meta.health, this.opts.env, window.signal),
      ]);
    } catch (err) {
      window.abort();
      // The agent is stopping (perhaps restarted by the switch itself): the journal stays, and
      // recover() at the next start runs the window again instead of undoing a good switch.
      if (signal.aborted) throw new Error("activation interrupted in the confirm window; recover() resumes it");
      return this.rollBack(journal, err instanceof Error ? err.message : String(err), events);
    } finally {
      clearTimeout(timer);
      unlisten();
    }
    const current: Installed = {
      ...release({ name: meta.name, version: meta.version, counter: meta.counter, sha256: journal.sha256 }),
      storePath: meta.storePath ?? "",
      ...(meta.units && { units: meta.units }),
    };
    await writeJsonAtomic(this.installedPath, current);
    await rm(this.journalPath, { force: true });
    events.step("healthy");
    return { outcome: "healthy", current: release(current) };
  }

  /** Sets the previous store path again and runs its switch script; reports why. */
  private async rollBack(journal: Journal, reason: string, events: ActivationEvents): Promise<ActivationOutcome> {
    const { meta, previous } = journal;
    const output = (stream: "stdout" | "stderr", line: string) => events.output(meta.name, stream, line);
    let error = reason;
    if (!previous) {
      error = `${reason}; no previous system to roll back to`;
    } else {
      const set = await this.nix.setProfile(this.profile, previous, output);
      const sw = set.code === 0 ? await runProgram(join(previous, "bin/switch-to-configuration"), [meta.nixosMode], { env: this.opts.env, onLine: output }) : undefined;
      if (set.code !== 0) error = `${reason}; rollback failed: nix-env --set ${previous}: ${lastLine(set.tail)}`;
      else if (sw && sw.code !== 0) error = `${reason}; rollback failed: the previous system's switch-to-configuration exited with ${sw.code}`;
    }
    await rm(this.journalPath, { force: true });
    const ok = previous !== null && error === reason;
    if (ok && journal.previousRelease) {
      events.step("rolled-back", `${reason}; re-activated ${previous}`);
      return { outcome: "rolled-back", error: reason, current: journal.previousRelease };
    }
    const detail = ok ? `${reason}; re-activated ${previous}, which Flotilla did not install` : error;
    events.step("failed", detail);
    return { outcome: "failed", error: detail, current: ok ? undefined : journal.previousRelease ?? undefined };
  }
}

/**
 * The closure manifest of the release's artifact (hash-checked against the signed target before
 * it reaches the activator). An artifact without one, from a CLI older than manifests, is
 * refused: the signed release must determine every byte that is installed.
 */
async function pinnedClosure(artifactPath: string | undefined, storePath: string): Promise<ClosureEntry[]> {
  if (artifactPath === undefined) throw new Error("a NixOS release needs its verified artifact (the closure manifest)");
  const artifact = parseNixosArtifact(await readFile(artifactPath, "utf8"));
  if (artifact.storePath !== storePath) throw new Error(`the release's artifact names ${artifact.storePath}, its metadata ${storePath}`);
  if (!artifact.closure) {
    throw new Error("the release's artifact has no closure manifest (made by an older flotilla CLI): create the release again with a current CLI");
  }
  return artifact.closure;
}

function release(r: InstalledRelease): InstalledRelease {
  return { name: r.name, version: r.version, counter: r.counter, sha256: r.sha256 };
}

/** nix's error from the end of its stderr: from the last "error:" line on, on one line. */
function lastLine(text: string): string {
  const lines = text.trim().split("\n");
  const start = lines.findLastIndex((l) => l.trimStart().startsWith("error:"));
  const msg = lines.slice(start >= 0 ? start : lines.length - 1).join(" ").replace(/\s+/g, " ").trim();
  return msg.slice(0, 500) || "no output";
}
