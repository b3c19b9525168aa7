/**
 * The Nix binary-cache HTTP protocol, one cache per organization at /nix/<organization>/
 * (name or id): `nix-cache-info`, `<hash>.narinfo`, `nar/<filehash>.nar`. What `nix copy
 * --from/--to`, `nix path-info --store` and substituters speak.
 *
 * Authentication is HTTP basic (nix reads it from a netrc file): the password is a session
 * token (a device's or an admin's) or an API token; the user name is ignored. Devices and admins
 * with `nix:read` read; admins with `nix:write` upload with PUT.
 *
 * Uploads are verified before anything is recorded: the NAR's sha256 must match its name, the
 * narinfo must name a stored NAR of the stated size and hash (uncompressed only: Node has no xz),
 * its references must already be in the cache, and every `Sig` by one of the organization's key
 * names must verify. Signatures by other keys are dropped. A narinfo with no valid signature of
 * the organization is signed on upload with the keys whose secret the coordinator holds, and
 * refused when it holds none.
 *
 * A narinfo, once written, is immutable: a PUT for a store path the cache holds is accepted only
 * when it says the same (StorePath, NarHash, NarSize, References: what a signature covers), and
 * changes nothing; any other is refused with 409. NAR files are stored under their own sha256,
 * so a NAR upload never changes the bytes behind a narinfo either.
 */
import { resolvePrincipal } from "../access/interceptor.ts";
import { rolePermissions } from "../access/policy.ts";
import type { Principal } from "../access/principal.ts";
import type { ServiceContext } from "../context.ts";
import type { NixPathRow } from "../store/index.ts";
import { answerFailure, checkMethod, headerOf, HttpError, pathOf, readBody, sendText, type HttpRequest, type HttpResponse, type HttpRoute } from "../server/http.ts";
import { NarFiles, narHexOf, TooLargeError } from "./nar-files.ts";
import { HASH_PART, MAX_NAR_SIZE, formatSha256, fromNixBase32, formatNarInfo, parseNarInfo, toNixBase32, type NarInfo } from "./nix-format.ts";
import { orgNixKeys } from "./nix-service.ts";
import { checkUpload } from "./upload.ts";

const PREFIX = "/nix/";
const MAX_NARINFO_BYTES = 256 * 1024;
const CACHE_INFO = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";

/** Whether a stored path says what an uploaded narinfo says, as far as a signature covers it. */
function sameContent(stored: NixPathRow, info: NarInfo): boolean {
  const refs = (r: string[]) => JSON.stringify([...r].sort());
  return stored.storePath === info.storePath && stored.narHash === info.narHash && stored.narSize === info.narSize && refs(stored.references) === refs(info.references);
}

function replaceRefused(stored: NixPathRow): HttpError {
  return new HttpError(
    409,
    `${stored.storePath} is already in the cache with other content (NarHash ${formatSha256(stored.narHash)}, NarSize ${stored.narSize}); a store path's narinfo is never replaced`,
  );
}

/** The request's Content-Length, when it sends one. */
function declaredLength(req: HttpRequest): number | undefined {
  const v = headerOf(req, "content-length");
  return v !== null && /^\d{1,16}$/.test(v) ? Number(v) : undefined;
}

function credential(header: string | null): string | undefined {
  if (!header) return undefined;
  const basic = /^Basic ([A-Za-z0-9+/=]{1,2048})$/.exec(header);
  if (basic) {
    const text = Buffer.from(basic[1]!, "base64").toString("utf8");
    const i = text.indexOf(":");
    return i >= 0 ? text.slice(i + 1) : undefined;
  }
  const bearer = /^Bearer (\S{1,2048})$/.exec(header);
  return bearer?.[1];
}

/**
 * Returns a request handler for /nix/...; it answers and returns true for those paths, and
 * returns false for any other. NARs live in `dir` (content-addressed), metadata in the store.
 */
export function nixCacheHandler(ctx: ServiceContext, opts: { dir: string; files?: NarFiles }): HttpRoute {
  const files = opts.files ?? new NarFiles(opts.dir);

  async function authorize(req: HttpRequest, orgSegment: string, write: boolean): Promise<{ orgId: string; principal: Principal }> {
    const token = credential(headerOf(req, "authorization"));
    const principal = token ? await resolvePrincipal(ctx.store, `Bearer ${token}`, "", null) : undefined;
    if (!principal) {
      throw new HttpError(401, "log in: HTTP basic auth with a session or API token as the password", { "www-authenticate": 'Basic realm="flotilla nix cache"' });
    }
    const org = (await ctx.store.access.getOrgByName(orgSegment)) ?? (await ctx.store.access.getOrg(orgSegment));
    if (!org || org.id !== principal.orgId) throw new HttpError(403, "not a member of this organization");
    // Devices read once approved: a pending, rejected or decommissioned one gets nothing.
    if (principal.kind === "device") {
      if (write) throw new HttpError(403, "uploading needs the nix:write permission");
      if (principal.lifecycle !== "approved") throw new HttpError(403, `only approved devices may read the cache; this device is ${principal.lifecycle}`);
    } else if (!rolePermissions[principal.role].has(write ? "nix:write" : "nix:read")) {
      throw new HttpError(403, write ? "uploading needs the nix:write permission" : "reading needs nix:read");
    }
    return { orgId: org.id, principal };
  }

  async function getNarInfo(orgId: string, hashPart: string, res: HttpResponse, head: boolean): Promise<void> {
    const p = await ctx.store.nix.getPath(orgId, hashPart);
    if (!p) return sendText(res, 404, "no such path\n");
    const body = formatNarInfo({ ...p, url: `nar/${toNixBase32(Buffer.from(p.fileHash, "hex"))}.nar`, compression: "none" });
    res.writeHead(200, { "content-type": "text/x-nix-narinfo", "content-length": String(Buffer.byteLength(body)) });
    res.end(head ? "" : body);
  }

  async function getNar(orgId: string, name: string, res: HttpResponse, head: boolean): Promise<void> {
    const m = /^([0-9a-z]{52})\.nar$/.exec(name);
    let hex: string | undefined;
    try {
      hex = m ? Buffer.from(fromNixBase32(m[1]!, 32)).toString("hex") : undefined;
    } catch {
      hex = undefined;
    }
    if (!hex || !(await ctx.store.nix.hasFile(orgId, hex))) return sendText(res, 404, "no such NAR\n");
    const size = await files.size(hex);
    if (size === undefined) return sendText(res, 404, "no such NAR\n");
    res.writeHead(200, { "content-type": "application/x-nix-nar", "content-length": String(size) });
    if (head) return void res.end();
    const stream = files.open(hex);
    stream.on("error", () => res.destroy());
    stream.pipe(res as NodeJS.WritableStream);
  }

  async function putNar(req: HttpRequest, name: string, orgId: string, res: HttpResponse): Promise<void> {
    const m = /^([0-9a-z]{52})\.nar(\.[a-z0-9]+)?$/.exec(name);
    if (!m) throw new HttpError(400, "NAR names are nar/<base32 sha256>.nar");
    if (m[2]) throw new HttpError(415, "only uncompressed NARs are accepted: copy to the cache URL with ?compression=none");
    const { kept, hex } = await files
      .put(req as AsyncIterable<Buffer>, MAX_NAR_SIZE, (hex) => toNixBase32(Buffer.from(hex, "hex")) === m[1], { orgId, declared: declaredLength(req), expected: narHexOf(m[1]!) })
      .catch((err: unknown) => {
        throw err instanceof TooLargeError ? new HttpError(413, err.message) : err;
      });
    if (!kept) throw new HttpError(400, "the NAR's sha256 does not match its name");
    await ctx.store.nix.recordNar(orgId, hex, Date.now());
    sendText(res, 200, "stored\n");
  }

  async function putNarInfo(req: HttpRequest, hashPart: string, orgId: string, principal: Principal, res: HttpResponse): Promise<void> {
    let info;
    try {
      info = parseNarInfo(await readBody(req, MAX_NARINFO_BYTES));
    } catch (err) {
      throw err instanceof HttpError ? err : new HttpError(400, `invalid narinfo: ${err instanceof Error ? err.message : String(err)}`);
    }
    const source = req.socket.remoteAddress ?? "";
    const actor = principal.kind === "admin" ? principal.actor : `device:${principal.deviceId}`;
    const audit = (outcome: string, detail = "") =>
      ctx.auditor.record({ orgId, actor, action: "NixUpload", target: info.storePath, source, outcome, detail: detail.slice(0, 500) });
    const before = await ctx.store.nix.getPath(orgId, hashPart);
    if (before) {
      // `nix copy` pushes again what it finds missing or unsure: the same content is fine.
      if (sameContent(before, info)) return sendText(res, 200, "already stored\n");
      const err = replaceRefused(before);
      await audit("refused", err.message);
      throw err;
    }
    let sigs: string[];
    try {
      sigs = await checkUpload(info, hashPart, {
        keys: await orgNixKeys(ctx, orgId),
        // Only NARs this organization uploaded: knowing another's hash must not make it readable.
        narSize: async (hex) => ((await ctx.store.nix.hasNar(orgId, hex)) ? files.size(hex) : undefined),
        existing: (parts) => ctx.store.nix.existingPaths(orgId, parts),
      });
    } catch (err) {
      if (err instanceof HttpError) await audit("refused", err.message);
      throw err;
    }
    const raced = await ctx.store.nix.addPath({
      orgId,
      hashPart,
      storePath: info.storePath,
      fileHash: info.fileHash,
      fileSize: info.fileSize,
      narHash: info.narHash,
      narSize: info.narSize,
      references: info.references,
      deriver: info.deriver,
      sigs,
      ca: info.ca,
      createdAt: Date.now(),
    });
    if (raced && !sameContent(raced, info)) {
      const err = replaceRefused(raced);
      await audit("refused", err.message);
      throw err;
    }
    await audit("ok");
    sendText(res, 200, "stored\n");
  }

  async function handle(req: HttpRequest, res: HttpResponse, path: string): Promise<void> {
    const rest = path.slice(PREFIX.length);
    const slash = rest.indexOf("/");
    let orgSegment = "";
    try {
      orgSegment = decodeURIComponent(rest.slice(0, slash));
    } catch {
      throw new HttpError(400, "malformed organization in the path");
    }
    const file = rest.slice(slash + 1);
    if (slash <= 0 || !orgSegment || orgSegment.length > 200 || !file) throw new HttpError(404, "expected /nix/<organization>/<file>");
    const method = checkMethod(req, ["GET", "HEAD", "PUT"]);
    const write = method === "PUT";
    const { orgId, principal } = await authorize(req, orgSegment, write);
    const head = method === "HEAD";
    const narinfo = /^([0-9a-z]+)\.narinfo$/.exec(file);
    if (narinfo && !HASH_PART.test(narinfo[1]!)) throw new HttpError(404, "not a store path hash");
    if (file === "nix-cache-info") {
      if (write) throw new HttpError(403, "the cache's info is fixed");
      return sendText(res, 200, head ? "" : CACHE_INFO, { "content-type": "text/x-nix-cache-info" });
    }
    if (narinfo) return write ? putNarInfo(req, narinfo[1]!, orgId, principal, res) : getNarInfo(orgId, narinfo[1]!, res, head);
    if (file.startsWith("nar/")) return write ? putNar(req, file.slice(4), orgId, res) : getNar(orgId, file.slice(4), res, head);
    throw new HttpError(write ? 403 : 404, write ? "this cache accepts only NARs and narinfo files" : "not found");
  }

  return (req, res) => {
    const path = pathOf(req);
    if (!path.startsWith(PREFIX)) return false;
    handle(req, res, path).catch((err: unknown) => answerFailure(res, err, "text", () => ctx.log.error("nix cache request failed", { err: String(err), path })));
    return true;
  };
}
