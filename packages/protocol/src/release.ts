/**
 * A release's signed description: the `custom.flotilla` object of its TUF target
 * (docs/architecture.md, decision 3). Admins sign it into `targets` metadata; the coordinator cannot change it; the
 * agent validates it with this schema after TUF verification and before acting on anything.
 */
import * as z from "zod";

/** Release names: lowercase letters, digits, dashes, dots and underscores. */
export const RELEASE_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** A systemd unit name with its type suffix, e.g. `kiosk.service` or `getty@tty1.service`. */
export const SYSTEMD_UNIT = /^[A-Za-z0-9:_.@-]{1,240}\.(service|socket|target|timer|path|mount|swap|slice|scope|automount)$/;

export const healthSpecSchema = z
  .object({
    /** The process must stay up this long (seconds). */
    upSeconds: z.number().int().min(0).max(3600).optional(),
    /** A shell command, run in the release directory, that must exit 0. */
    command: z.string().min(1).max(4096).optional(),
    /** An http(s) URL whose GET must answer 2xx. */
    http: z.string().url().max(2048).optional(),
    /** How long the checks may take before the activation counts as failed (seconds). */
    windowSeconds: z.number().int().min(1).max(3600).default(60),
  })
  .strict();
export type HealthSpec = z.infer<typeof healthSpecSchema>;

export const releaseMetaSchema = z
  .object({
    name: z.string().regex(RELEASE_NAME),
    /** The human version string, e.g. "1.4.0" or "2026.11.3". */
    version: z.string().min(1).max(128),
    /** Grows by one per release of this name; the agent refuses a lower one (anti-rollback). */
    counter: z.number().int().positive(),
    kind: z.enum(["bundle", "nixos", "agent"]),
    /** Architectures (`uname -m`) the release runs on; empty means any. */
    arch: z.array(z.string().min(1).max(32)).max(16).default([]),
    /** bundle: the command line to run and supervise, relative to the release directory. */
    run: z.string().min(1).max(4096).optional(),
    /** bundle: when to restart the supervised process. */
    restart: z.enum(["always", "on-failure", "never"]).default("always"),
    /** bundle: whether the artifact is a single executable rather than a tarball. */
    singleFile: z.boolean().default(false),
    health: healthSpecSchema.optional(),
    /** nixos: the top-level system store path (/nix/store/...). */
    storePath: z.string().regex(/^\/nix\/store\/[0-9a-z]{32}-[^/]+$/).optional(),
    /**
     * nixos: the Nix public keys (`name:base64`) the agent trusts for this closure, signed here by
     * the admins so that the coordinator cannot substitute its own.
     */
    nixPublicKeys: z.array(z.string().regex(/^[A-Za-z0-9._+-]{1,128}:[A-Za-z0-9+/]{43}=$/)).max(16).default([]),
    /**
     * nixos: the systemd units `flotilla device restart|stop|start` act on (`systemctl ACTION
     * UNIT...`). Absent from releases that declare none, so older agents still accept those.
     */
    units: z.array(z.string().regex(SYSTEMD_UNIT)).min(1).max(32).optional(),
    /** nixos: switch-to-configuration's action. */
    nixosMode: z.enum(["switch", "test", "boot"]).default("switch"),
    /** Lets an agent install this even when it runs a higher counter of the same name. */
    allowDowngrade: z.boolean().default(false),
  })
  .strict();
export type ReleaseMeta = z.infer<typeof releaseMetaSchema>;

/** Validates an untrusted value as release metadata; throws an Error naming the bad field. */
export function parseReleaseMeta(value: unknown): ReleaseMeta {
  const r = releaseMetaSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`invalid release metadata: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}`);
  }
  return r.data;
}

/** The TUF target path of a release: `<name>/<counter>/<file>`. */
export function releaseTargetPath(meta: Pick<ReleaseMeta, "name" | "counter">, file: string): string {
  return `${meta.name}/${meta.counter}/${file}`;
}

/** One release's artifact and signed description, wherever it was read from. */
export interface ReleaseContent {
  sha256: string;
  length: number;
  meta: ReleaseMeta;
}

/**
 * Whether `copy` is `original` signed again: the same bytes and the same metadata but for the
 * counter. Such a copy with a higher counter is how devices return to an earlier release without
 * weakening anti-rollback.
 */
export function isReissueOf(copy: ReleaseContent, original: ReleaseContent): boolean {
  const rest = (r: ReleaseContent) => JSON.stringify({ ...parseReleaseMeta(r.meta), counter: 0 });
  return copy.sha256 === original.sha256 && copy.length === original.length && rest(copy) === rest(original);
}
