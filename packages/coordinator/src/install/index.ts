import { createReadStream } from "node:fs";
import { realpath, stat } from "node:fs/promises";
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { isSea } from "node:sea";
import { pipeline } from "node:stream/promises";
import { VERSION } from "@flotilla/protocol";
import type { CoordinatorConfig } from "../config.ts";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { answerFailure, checkMethod, HttpError, pathOf, sendText, type HttpRequest, type HttpResponse } from "../server/http.ts";
import { installScript } from "./script.ts";

const ARCHS = ["x86_64", "aarch64"] as const;
type Arch = (typeof ARCHS)[number];

/**
 * Installing agents from the coordinator itself (docs/install.md): `GET /install.sh` serves a
 * script that installs the agent with a join string, and `GET /install/flotilla-linux-<arch>`
 * the executables it downloads, from --install-dir. A packaged coordinator (the single
 * executable of `npm run package`) serves the directory its own executable is in, by default:
 * /usr/lib/flotilla for the .deb. Without one, both answer 404 saying how to configure it.
 * Neither needs a login: the script holds no secret (the join string is given on the machine).
 */
export async function installFeature(ctx: ServiceContext, config: Pick<CoordinatorConfig, "installDir">): Promise<Feature> {
  const dir = config.installDir ?? (isSea() ? dirname(await realpath(process.execPath)) : undefined);
  const files = new InstallFiles(dir);
  return {
    name: "install",
    http(req, res) {
      const path = pathOf(req);
      if (path === "/install.sh") {
        void answer(req, res, async () => {
          const sha256 = Object.fromEntries(
            await Promise.all(ARCHS.map(async (a) => [a, (await files.find(a))?.sha256] as const)),
          ) as Record<Arch, string | undefined>;
          if (!sha256.x86_64 && !sha256.aarch64) throw files.missing();
          // The address agents dial (known once the listener is up), which the join string carries too.
          const body = installScript({ url: ctx.publicUrl.replace(/\/+$/, ""), sha256 });
          if (req.method === "HEAD") return sendText(res, 200, "", { "content-type": "text/x-shellscript; charset=utf-8" });
          sendText(res, 200, body, { "content-type": "text/x-shellscript; charset=utf-8" });
        }, ctx);
        return true;
      }
      const m = /^\/install\/flotilla-linux-([^/]+)$/.exec(path);
      if (!m) return false;
      void answer(req, res, async () => {
        const arch = m[1] as Arch;
        if (!ARCHS.includes(arch)) throw new HttpError(404, `there is no flotilla executable for ${m[1]}: use x86_64 or aarch64`);
        const file = await files.find(arch);
        if (!file) throw files.missing(arch);
        res.writeHead(200, {
          "content-type": "application/octet-stream",
          "content-length": String(file.size),
          "cache-control": "no-store",
        });
        if (req.method === "HEAD") return void res.end();
        await pipeline(createReadStream(file.path), res);
      }, ctx);
      return true;
    },
    serviceNames: [],
    close() {},
  };
}

async function answer(req: HttpRequest, res: HttpResponse, fn: () => Promise<void>, ctx: ServiceContext): Promise<void> {
  try {
    checkMethod(req, ["GET", "HEAD"]);
    await fn();
  } catch (err) {
    answerFailure(res, err, "text", (e) => ctx.log.error("install: request failed", { error: String(e) }));
  }
}

interface Executable {
  path: string;
  size: number;
  sha256: string;
}

/** The executables in the install directory, their digests computed once per file version. */
class InstallFiles {
  private readonly digests = new Map<string, { key: string; sha256: Promise<string> }>();

  constructor(private readonly dir: string | undefined) {}

  /** The executable for `arch`: flotilla-linux-<arch>, else the versioned name npm run package gives it. */
  async find(arch: Arch): Promise<Executable | undefined> {
    if (this.dir === undefined) return undefined;
    for (const name of [`flotilla-linux-${arch}`, `flotilla-${VERSION}-linux-${arch}`]) {
      const path = join(this.dir, name);
      const st = await stat(path).catch(() => undefined);
      if (!st?.isFile()) continue;
      const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
      let d = this.digests.get(path);
      if (d?.key !== key) {
        d = { key, sha256: digest(path) };
        this.digests.set(path, d);
        d.sha256.catch(() => this.digests.delete(path));
      }
      return { path, size: st.size, sha256: await d.sha256 };
    }
    return undefined;
  }

  missing(arch?: Arch): HttpError {
    if (this.dir === undefined) {
      return new HttpError(
        404,
        "this coordinator serves no agent installs: start it with --install-dir DIR, a directory with flotilla-linux-x86_64 and/or flotilla-linux-aarch64 (npm run package writes them to dist/)",
      );
    }
    const names = arch ? `flotilla-linux-${arch}` : "flotilla-linux-x86_64 or flotilla-linux-aarch64";
    return new HttpError(404, `the install directory ${this.dir} of this coordinator has no ${names}`);
  }
}

async function digest(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
