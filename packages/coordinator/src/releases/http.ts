/**
 * The plain-HTTP side of releases: resumable artifact uploads for admins, and TUF metadata and
 * artifact downloads (with Range) for the organization's devices. See docs/releases.md.
 */
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  ARTIFACTS_PATH,
  AUTHORIZATION_HEADER,
  TUF_METADATA_PATH,
  TUF_TARGETS_PATH,
  UPLOAD_COMPLETE_HEADER,
  UPLOAD_LENGTH_HEADER,
  UPLOAD_OFFSET_HEADER,
  type Logger,
} from "@flotilla/protocol";
import { SHA256_HEX, UploadError, type ArtifactStore } from "../artifacts/artifact-store.ts";
import { QuotaError } from "../artifacts/storage-quota.ts";
import { CSRF_HEADER } from "../access/cookies.ts";
import { resolvePrincipal } from "../access/interceptor.ts";
import { rolePermissions, type Permission } from "../access/policy.ts";
import type { Principal } from "../access/principal.ts";
import type { Auditor } from "../audit/auditor.ts";
import { answerFailure, checkMethod, headerOf, HttpError, pathOf, sendJson, type HttpRequest, type HttpResponse, type HttpRoute } from "../server/http.ts";
import type { Store } from "../store/index.ts";
import type { TufRepository } from "../tuf/repository.ts";

function intHeader(req: HttpRequest, name: string): number {
  const v = headerOf(req, name);
  if (v === null || !/^\d{1,16}$/.test(v)) throw new UploadError(`header ${name} must be a non-negative integer`, 400);
  return Number(v);
}

/** Handles /artifacts/v1/ and /tuf/v1/; returns false for any other path. */
export function releasesHttpHandler(deps: { store: Store; artifacts: ArtifactStore; tuf: TufRepository; log: Logger; auditor?: Auditor }): HttpRoute {
  const { store, artifacts, tuf, log, auditor } = deps;

  async function caller(req: HttpRequest, wants: "device-or-reader" | "writer"): Promise<Principal> {
    const p = await resolvePrincipal(store, headerOf(req, AUTHORIZATION_HEADER), headerOf(req, "cookie") ?? "", headerOf(req, CSRF_HEADER));
    if (!p) throw new HttpError(401, "not logged in, or the session expired");
    const need: Permission = wants === "writer" ? "releases:write" : "releases:read";
    if (p.kind === "device") {
      if (wants === "writer") throw new HttpError(403, "only admins may upload artifacts");
      // A pending, rejected or decommissioned device keeps its session, but reads no release.
      if (p.lifecycle !== "approved") throw new HttpError(403, `only approved devices may read releases; this device is ${p.lifecycle}`);
      return p;
    }
    if (!rolePermissions[p.role].has(need)) throw new HttpError(403, `role ${p.role} may not ${wants === "writer" ? "upload artifacts" : "read releases"}`);
    return p;
  }

  async function upload(req: HttpRequest, res: HttpResponse, sha256: string): Promise<void> {
    const p = await caller(req, "writer");
    const length = intHeader(req, UPLOAD_LENGTH_HEADER);
    // The bytes are stored once for every organization, but each must upload them itself before
    // they count as complete for it: knowing a sha256 is not having its bytes.
    const owns = SHA256_HEX.test(sha256) && (await store.releases.ownsArtifact(p.orgId, sha256, length));
    const by = { owner: p.orgId, owns };
    if (req.method === "GET" || req.method === "HEAD") {
      const state = await artifacts.state(by, sha256, length);
      // Asked before an upload, say now whether it would fit in the organization's quota.
      if (!state.complete) await artifacts.admits(by, sha256, length);
      return sendJson(res, 200, state.complete ? { complete: true, offset: length } : state);
    }
    checkMethod(req, ["GET", "PATCH"]);
    const offset = intHeader(req, UPLOAD_OFFSET_HEADER);
    const last = headerOf(req, UPLOAD_COMPLETE_HEADER) === "?1";
    const declared = headerOf(req, "content-length");
    if (declared !== null && offset + Number(declared) > length) {
      throw new UploadError(`upload exceeds the declared length of ${length} bytes`, 413);
    }
    // A finished or refused upload is a change, audited like every other (an interrupted one is not).
    const audit = (outcome: string) =>
      p.kind === "admin"
        ? auditor?.record({ orgId: p.orgId, actor: p.actor, action: "UploadArtifact", target: sha256, source: req.socket.remoteAddress ?? "", outcome, detail: `${length} bytes` })
        : undefined;
    let state;
    try {
      state = await artifacts.append(by, sha256, length, offset, req as Readable, last);
    } catch (err) {
      if (err instanceof UploadError || err instanceof QuotaError) await audit(`refused: ${err.message}`);
      throw err;
    }
    if (state.complete && !owns) await store.releases.recordArtifactOwner(p.orgId, sha256, length, Date.now());
    if (state.complete) await audit("ok");
    sendJson(res, state.complete ? 201 : 200, state.complete ? { complete: true, offset: length } : state);
  }

  async function metadata(req: HttpRequest, res: HttpResponse, file: string): Promise<void> {
    const p = await caller(req, "device-or-reader");
    const bytes = await tuf.read(p.orgId, file);
    if (!bytes) throw new HttpError(404, `no metadata ${file}`);
    res.writeHead(200, { "content-type": "application/json", "content-length": String(bytes.length), "cache-control": "no-store" });
    res.end(bytes);
  }

  async function target(req: HttpRequest, res: HttpResponse, path: string): Promise<void> {
    const p = await caller(req, "device-or-reader");
    // Consistent snapshots: <dir>/<sha256>.<file>; the bytes are found by their hash.
    const base = path.slice(path.lastIndexOf("/") + 1);
    const sha256 = base.slice(0, 64);
    if (!SHA256_HEX.test(sha256) || base[64] !== ".") throw new HttpError(404, "no such target");
    const size = await artifacts.size(sha256);
    if (size === undefined || !(await store.releases.hasArtifact(p.orgId, sha256, size))) throw new HttpError(404, "no such target");
    let start = 0;
    let end = size - 1;
    const range = headerOf(req, "range");
    if (range) {
      const m = /^bytes=(\d{1,16})-(\d{0,16})$/.exec(range);
      if (!m) throw new HttpError(416, "only one byte range (bytes=a- or bytes=a-b) is supported");
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), size - 1);
      if (start >= size || end < start) {
        res.writeHead(416, { "content-range": `bytes */${size}` });
        return void res.end();
      }
    }
    res.writeHead(range ? 206 : 200, {
      "content-type": "application/octet-stream",
      "content-length": String(end - start + 1),
      "accept-ranges": "bytes",
      ...(range ? { "content-range": `bytes ${start}-${end}/${size}` } : {}),
    });
    if (req.method === "HEAD" || size === 0) return void res.end();
    await pipeline(artifacts.read(sha256, start, end), res as NodeJS.WritableStream);
  }

  return (req, res) => {
    const path = pathOf(req);
    let work: Promise<void>;
    if (path.startsWith(ARTIFACTS_PATH)) work = upload(req, res, path.slice(ARTIFACTS_PATH.length));
    else if (path.startsWith(TUF_METADATA_PATH)) work = metadata(req, res, path.slice(TUF_METADATA_PATH.length));
    else if (path.startsWith(TUF_TARGETS_PATH)) work = target(req, res, path.slice(TUF_TARGETS_PATH.length));
    else return false;
    work.catch((err: unknown) => answerFailure(res, err, "json", () => log.warn("release HTTP request failed", { path, err: String(err) })));
    return true;
  };
}
