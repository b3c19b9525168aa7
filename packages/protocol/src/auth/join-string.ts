/**
 * Join strings: what an admin hands to a new machine. They carry the coordinator's address,
 * the pin of its key (so the agent needs no CA and cannot be fooled by an impostor) and the
 * token's secret. Form: `flotilla-join-v1.` + base64url(JSON {u, p, s, r?}). `r`, added later
 * (older join strings lack it and still parse), names the organization's TUF root when it had
 * one: `{v: version, h: sha256}` of tufRootDigest(); the agent trusts that root and no other as
 * its first (agent/src/releases/coordinator-http.ts). `f`, added later still, lists more
 * addresses of the same coordinator (its other replicas) the agent fails over to when `u` does
 * not answer; agents that predate it dial `u` alone.
 */

const PREFIX = "flotilla-join-v1.";
const MAX_LENGTH = 4096;
/** The most failover addresses a join string carries. */
export const MAX_FAILOVER_URLS = 16;

export interface JoinString {
  /** The coordinator's URL, e.g. https://coord.example:7700. */
  url: string;
  /** keyPin() of the coordinator's public key. */
  pin: string;
  /** `<token id>.<secret>`; the coordinator stores only a hash of the secret. */
  secret: string;
  /** The organization's root when the join string was made (tufRootDigest), if it had one. */
  root?: { version: number; sha256: string };
  /** More addresses of the same coordinator (other replicas), tried in turn when `url` fails. */
  failoverUrls?: string[];
}

export function encodeJoinString(join: JoinString): string {
  const body = JSON.stringify({
    u: join.url,
    p: join.pin,
    s: join.secret,
    ...(join.root ? { r: { v: join.root.version, h: join.root.sha256 } } : {}),
    ...(join.failoverUrls?.length ? { f: join.failoverUrls } : {}),
  });
  return PREFIX + Buffer.from(body).toString("base64url");
}

/** Parses a join string; throws an Error with one clear line for anything malformed. */
export function parseJoinString(text: string): JoinString {
  const trimmed = text.trim();
  if (trimmed.length > MAX_LENGTH) throw new Error("invalid join string: too long");
  if (!trimmed.startsWith(PREFIX)) throw new Error(`invalid join string: it must start with ${PREFIX}`);
  let body: unknown;
  try {
    body = JSON.parse(Buffer.from(trimmed.slice(PREFIX.length), "base64url").toString("utf8"));
  } catch {
    throw new Error("invalid join string: it is damaged (not base64url JSON)");
  }
  const { u, p, s, r, f } = (body ?? {}) as Record<string, unknown>;
  if (typeof u !== "string" || typeof p !== "string" || typeof s !== "string") {
    throw new Error("invalid join string: address, key pin or secret missing");
  }
  checkCoordinatorUrl(u);
  if (!/^[A-Za-z0-9_-]{43}$/.test(p)) throw new Error("invalid join string: bad key pin");
  if (!/^[a-z0-9]+\.[A-Za-z0-9_-]{20,100}$/.test(s)) throw new Error("invalid join string: bad secret");
  const out: JoinString = { url: u.replace(/\/+$/, ""), pin: p, secret: s };
  if (r !== undefined) {
    const { v, h } = (r ?? {}) as Record<string, unknown>;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1 || typeof h !== "string" || !/^[0-9a-f]{64}$/.test(h)) {
      throw new Error("invalid join string: bad signing root digest");
    }
    out.root = { version: v, sha256: h };
  }
  if (f !== undefined) {
    if (!Array.isArray(f) || f.length > MAX_FAILOVER_URLS || !f.every((x) => typeof x === "string")) {
      throw new Error(`invalid join string: failover addresses must be a list of at most ${MAX_FAILOVER_URLS}`);
    }
    for (const x of f as string[]) checkCoordinatorUrl(x);
    const urls = [...new Set((f as string[]).map((x) => x.replace(/\/+$/, "")))].filter((x) => x !== out.url);
    if (urls.length > 0) out.failoverUrls = urls;
  }
  return out;
}

function checkCoordinatorUrl(u: string): void {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new Error(`invalid join string: bad coordinator address ${JSON.stringify(u)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error("invalid join string: the coordinator address must be http or https");
  }
}

/** The join string with `failoverUrls` added after those it carries (the CLI's `--coordinator-url` given more than once). */
export function withFailoverUrls(joinString: string, urls: readonly string[]): string {
  if (urls.length === 0) return joinString;
  const j = parseJoinString(joinString);
  return encodeJoinString({ ...j, failoverUrls: [...(j.failoverUrls ?? []), ...urls] });
}

/** Splits a join secret into its token id and secret part. */
export function splitJoinSecret(secret: string): { tokenId: string; secret: string } | undefined {
  const m = /^([a-z0-9]+)\.([A-Za-z0-9_-]{20,100})$/.exec(secret);
  return m ? { tokenId: m[1]!, secret: m[2]! } : undefined;
}
