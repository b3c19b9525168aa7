/**
 * A NixOS release's artifact, `<name>.nixos.json`: the system's store path and its closure
 * manifest (every store path with its NarHash and NarSize), as the admin's own `nix path-info`
 * saw them. The artifact's sha256 is in the release's signed TUF target, so the manifest is what
 * the admins signed: the agent installs a closure only when what nix realised matches it path
 * for path, whatever the binary cache served and whoever signed its narinfos.
 */
import * as z from "zod";
import { fromNixBase32 } from "./nix-base32.ts";

const STORE_PATH = /^\/nix\/store\/[0-9a-z]{32}-[^/]+$/;
/** A sha256 in SRI form, as newer nix prints NarHash: `sha256-<base64 of 32 bytes>`. */
const SRI_SHA256 = /^sha256-[A-Za-z0-9+/]{43}=$/;
/** Above any real system closure (a full desktop has a few thousand paths). */
export const MAX_CLOSURE_PATHS = 200_000;

export const closureEntrySchema = z.object({
  path: z.string().regex(STORE_PATH),
  /** The NAR's sha256 in SRI form. */
  narHash: z.string().regex(SRI_SHA256),
  narSize: z.number().int().nonnegative(),
});
export type ClosureEntry = z.infer<typeof closureEntrySchema>;

/** The `.nixos.json` artifact. Fields are add-only: older agents read `storePath` alone. */
export const nixosArtifactSchema = z.object({
  storePath: z.string().regex(STORE_PATH),
  /** Every path of the closure, the system itself included, sorted by path. */
  closure: z.array(closureEntrySchema).min(1).max(MAX_CLOSURE_PATHS).optional(),
});
export type NixosArtifact = z.infer<typeof nixosArtifactSchema>;

/** Parses a `.nixos.json` artifact; throws an Error naming the first problem. */
export function parseNixosArtifact(text: string): NixosArtifact {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new Error("the NixOS release artifact is not JSON");
  }
  const r = nixosArtifactSchema.safeParse(value);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new Error(`invalid NixOS release artifact: ${issue?.path.join(".") || "(root)"}: ${issue?.message ?? "invalid"}`);
  }
  const seen = new Set<string>();
  for (const e of r.data.closure ?? []) {
    if (seen.has(e.path)) throw new Error(`invalid NixOS release artifact: ${e.path} is listed twice`);
    seen.add(e.path);
  }
  if (r.data.closure && !seen.has(r.data.storePath)) throw new Error("invalid NixOS release artifact: the closure does not contain the system's store path");
  return r.data;
}

/**
 * A NarHash as some nix version prints it (`sha256-<base64>`, `sha256:<base32>`,
 * `sha256:<hex>`), in SRI form; throws on anything else.
 */
export function normalizeNarHash(text: string): string {
  if (SRI_SHA256.test(text)) return text;
  const m = /^sha256:([0-9a-z]+)$/.exec(text);
  if (m && m[1]!.length === 64 && /^[0-9a-f]+$/.test(m[1]!)) return `sha256-${Buffer.from(m[1]!, "hex").toString("base64")}`;
  if (m && m[1]!.length === 52) return `sha256-${fromNixBase32(m[1]!, 32).toString("base64")}`;
  throw new Error(`not a sha256 NarHash: ${JSON.stringify(text.slice(0, 80))}`);
}

/**
 * The output of `nix path-info --json [--recursive] PATHS` as closure entries, sorted by path.
 * Reads both shapes nix has printed: an array of objects with `path` (nix up to 2.18, as
 * Debian's 2.8) and an object keyed by path (2.19 on). A path nix does not know is an error.
 */
export function parsePathInfoJson(text: string): ClosureEntry[] {
  const value = JSON.parse(text) as unknown;
  const rows: [string, unknown][] = Array.isArray(value)
    ? value.map((v) => [String((v as { path?: unknown } | null)?.path ?? ""), v])
    : value && typeof value === "object"
      ? Object.entries(value)
      : [];
  if (!rows.length) throw new Error("nix path-info printed no paths");
  const out = rows.map(([path, v]) => {
    const info = v as { narHash?: unknown; narSize?: unknown; valid?: unknown } | null;
    if (!info || info.valid === false || typeof info.narHash !== "string") throw new Error(`${path} is not a valid store path here`);
    return closureEntrySchema.parse({ path, narHash: normalizeNarHash(info.narHash), narSize: info.narSize });
  });
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/**
 * Compares the closure nix realised with the signed manifest; returns a difference as a
 * sentence, or undefined when they are the same set of paths with the same NarHash and NarSize.
 * Other bytes under a pinned path are named first, then a missing path, then an extra one, so
 * the sentence does not depend on the order of the manifest.
 */
export function closureMismatch(manifest: ClosureEntry[], actual: ClosureEntry[]): string | undefined {
  const have = new Map(actual.map((e) => [e.path, e]));
  for (const want of manifest) {
    const got = have.get(want.path);
    if (got && got.narHash !== want.narHash) return `${want.path} has NarHash ${got.narHash} here, but the release pins ${want.narHash}`;
    if (got && got.narSize !== want.narSize) return `${want.path} has NarSize ${got.narSize} here, but the release pins ${want.narSize}`;
  }
  const missing = manifest.find((want) => !have.has(want.path));
  if (missing) return `${missing.path} is in the release's closure manifest but not in the closure nix fetched`;
  const pinned = new Set(manifest.map((e) => e.path));
  const extra = actual.find((e) => !pinned.has(e.path));
  if (extra) return `${extra.path} is in the closure nix fetched but not in the release's closure manifest`;
  return undefined;
}
