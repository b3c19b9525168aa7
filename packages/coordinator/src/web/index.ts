/**
 * The web console (packages/web, built into packages/web/dist) served at `/`: index.html never
 * cached, hashed files under /assets/ cached for a year, every answer with a strict
 * Content-Security-Policy (scripts and styles from our origin only, calls to our origin only).
 * Any other GET for a page (a client route such as /devices/abc) gets index.html, so the app's
 * router answers it. RPC paths (/pkg.Service/Method) and the other features' routes are never
 * taken: this feature comes last in the list. Without a build, `/` says how to make one.
 */
import { createRequire } from "node:module";
import { readFile } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { answerFailure, pathOf, sendText, type HttpRequest, type HttpResponse } from "../server/http.ts";

/** No inline script or style, no plugin, no framing; fetches go only to this coordinator. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "manifest-src 'self'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS = {
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
};

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".woff2": "font/woff2",
  ".json": "application/json",
  ".ico": "image/x-icon",
  ".map": "application/json",
};

const NOT_BUILT = `The web console is not built.

Build it from the repository with:

  npm run build

(\`npm install\` builds it too), then reload this page.
`;

/** Where the built console lives: packages/web/dist, found through the workspace package. */
export function defaultWebDir(): string {
  try {
    return join(dirname(createRequire(import.meta.url).resolve("@flotilla/web/package.json")), "dist");
  } catch {
    return join(process.cwd(), "packages/web/dist");
  }
}

/** Whether this request is one the console answers (a page or an asset), not an RPC or API. */
function isConsolePath(req: HttpRequest, path: string): boolean {
  if (req.method !== "GET" && req.method !== "HEAD") return false;
  if (path === "/" || path === "/index.html" || path.startsWith("/assets/")) return true;
  // RPCs are /package.Service/Method; a client route has no dot in its first segment. Only
  // browsers asking for a page get index.html, so a tool's GET for an unknown path still gets 404.
  const first = path.split("/")[1] ?? "";
  const accept = typeof req.headers.accept === "string" ? req.headers.accept : "";
  return !first.includes(".") && accept.includes("text/html");
}

/** The file an /assets/ path names, or undefined when it is malformed or leaves `assets`. */
function assetPath(assets: string, root: string, path: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    return undefined;
  }
  if (decoded.includes("\0")) return undefined;
  const file = normalize(join(root, decoded));
  return file.startsWith(assets) ? file : undefined;
}

/** Serves the console from `dir` (default: packages/web/dist). */
export function webConsoleHandler(ctx: Pick<ServiceContext, "log">, dir = defaultWebDir()) {
  const root = normalize(dir) + sep;
  const assets = join(root, "assets") + sep;

  async function answer(req: HttpRequest, res: HttpResponse, path: string): Promise<void> {
    if (path.startsWith("/assets/")) {
      // Only files inside assets/: a decoded "../" must not reach the rest of the disk or dist/.
      const file = assetPath(assets, root, path);
      const body = file ? await readFile(file).catch(() => undefined) : undefined;
      if (!file || !body) return sendText(res, 404, "no such asset\n", SECURITY_HEADERS);
      res.writeHead(200, {
        "content-type": TYPES[extname(file)] ?? "application/octet-stream",
        "content-length": String(body.length),
        // File names carry a hash of their content: a new build has new names.
        "cache-control": "public, max-age=31536000, immutable",
        ...SECURITY_HEADERS,
      });
      if (req.method === "HEAD") res.end();
      else res.end(body);
      return;
    }
    const index = await readFile(join(root, "index.html")).catch(() => undefined);
    if (!index) return sendText(res, 503, NOT_BUILT, SECURITY_HEADERS);
    res.writeHead(200, {
      "content-type": "text/html; charset=utf-8",
      "content-length": String(index.length),
      // Always asked again, so a new build's asset names reach the browser at once.
      "cache-control": "no-cache",
      ...SECURITY_HEADERS,
    });
    if (req.method === "HEAD") res.end();
    else res.end(index);
  }

  return (req: HttpRequest, res: HttpResponse): boolean => {
    const path = pathOf(req);
    if (!isConsolePath(req, path)) return false;
    answer(req, res, path).catch((err: unknown) => answerFailure(res, err, "text", () => ctx.log.error("web console failed", { err: String(err) })));
    return true;
  };
}

/** The web console as a coordinator feature: plain-HTTP routes only. Comes last in the list. */
export function webConsoleFeature(ctx: ServiceContext, opts: { dir?: string } = {}): Feature {
  return { name: "web console", http: webConsoleHandler(ctx, opts.dir), serviceNames: [], close() {} };
}
