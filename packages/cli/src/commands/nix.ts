import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { adminv1, fetchPinnedCertificate } from "@flotilla/protocol";
import { adminClient, serviceClient, targetUrl, type AdminTarget } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import { UsageError } from "../errors.ts";
import { json } from "../output.ts";
import type { Run } from "./run.ts";

/** A key given as `name:base64`, or the path of a file holding one (keeps secrets out of `ps`). */
async function keyArg(text: string): Promise<string> {
  if (/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]+={0,2}$/.test(text)) return text;
  try {
    return (await readFile(text, "utf8")).trim();
  } catch {
    throw new UsageError(`${JSON.stringify(text)} is neither a Nix key name:base64 nor a readable file`);
  }
}

/**
 * The organization's binary-cache URL and a token nix may present for it: the API token
 * (FLOTILLA_TOKEN) or the admin's current session, logging in first when needed.
 */
export async function nixCacheAccess(target: AdminTarget): Promise<{ cacheUrl: string; token: string; pin: string | undefined }> {
  const url = await targetUrl(target);
  const me = await (await adminClient(target)).whoAmI({});
  const orgId = me.organization?.id;
  if (!orgId) throw new Error("the coordinator did not say which organization this is");
  const entry = (await new Credentials(target.home, target.keyFile).context()).coordinators[url];
  const token = target.apiToken ?? (target.org ? entry?.orgSessions?.[target.org] : entry?.session)?.token;
  if (!token) throw new Error("no session for the Nix cache: run `flotilla login` first");
  return { cacheUrl: `${url}/nix/${encodeURIComponent(orgId)}`, token, pin: entry?.pin || undefined };
}

/**
 * Copies store paths and their closures to the organization's cache with `nix copy --to`
 * (uncompressed, as the coordinator verifies every NAR). The token goes to nix in a netrc file
 * (0600, in a private temporary directory removed afterwards), never on a command line.
 */
export async function pushToNixCache(target: AdminTarget, paths: string[], stderr: (text: string) => void): Promise<string> {
  const { cacheUrl, token, pin } = await nixCacheAccess(target);
  const dir = await mkdtemp(join(tmpdir(), "flotilla-nix-"));
  try {
    const env = { ...process.env };
    if (cacheUrl.startsWith("https:") && pin) {
      // The coordinator's self-signed certificate, checked against the pinned key, is all nix trusts.
      const cert = await fetchPinnedCertificate(cacheUrl, pin).catch(() => undefined);
      if (cert) {
        env.NIX_SSL_CERT_FILE = join(dir, "coordinator.pem");
        await writeFile(env.NIX_SSL_CERT_FILE, cert);
      }
    }
    const netrc = join(dir, "netrc");
    await writeFile(netrc, `machine ${new URL(cacheUrl).hostname.replace(/^\[|\]$/g, "")}\nlogin flotilla\npassword ${token}\n`, { mode: 0o600 });
    const args = ["copy", "--extra-experimental-features", "nix-command", "--option", "netrc-file", netrc, "--to", `${cacheUrl}?compression=none`, ...paths];
    const code = await new Promise<number>((resolve, reject) => {
      const child = spawn("nix", args, { env, stdio: ["ignore", "inherit", "pipe"] });
      child.stderr.setEncoding("utf8").on("data", (d: string) => stderr(d));
      child.on("error", (err) => reject(new Error(`cannot run nix: ${err.message}`)));
      child.on("close", (c) => resolve(c ?? 1));
    });
    if (code !== 0) throw new Error(`nix copy to ${cacheUrl} failed (exit ${code})`);
    return cacheUrl;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** nix-key: the organization's Nix signing keys, which sign the paths in its binary cache. */
export function registerNixCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const client = () => serviceClient(target(), adminv1.NixService);
  const nixKey = program.command("nix-key").description("the organization's Nix signing keys (binary cache at /nix/<org>/)");
  nixKey
    .command("create <name>")
    .description("generate a signing key on the coordinator; prints its public key (name:base64)")
    .action((name: string) =>
      run(async (out) => {
        const { key } = await (await client()).createNixKey({ name });
        out(`${key?.publicKey}\n`);
      }),
    );
  nixKey
    .command("import <key>")
    .description("import a key made with nix-store --generate-binary-cache-key: the secret key (the coordinator signs uploads) or the public key (uploads must come signed); a name:base64 string or a file")
    .action((key: string) =>
      run(async (out) => {
        const res = await (await client()).importNixKey({ key: await keyArg(key) });
        out(`${res.key?.publicKey}${res.key?.canSign ? "" : " (public only: uploads must be signed by its secret key)"}\n`);
      }),
    );
  nixKey
    .command("ls")
    .description("list keys as name:publickey lines, ready for trusted-public-keys")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const { keys } = await (await client()).listNixKeys({});
        const rows = keys.map((k) => ({
          name: k.name,
          publicKey: k.publicKey,
          canSign: k.canSign,
          createdAt: k.createdAt ? new Date(timestampMs(k.createdAt)).toISOString() : "",
        }));
        out(opts.json ? json(rows) : rows.map((r) => `${r.publicKey}\n`).join(""));
      }),
    );
  const cache = program.command("nix-cache").description("the organization's Nix binary cache on the coordinator");
  cache
    .command("url")
    .description("print the cache's URL (for substituters; nix authenticates with a netrc holding a token)")
    .action(() =>
      run(async (out) => {
        out(`${(await nixCacheAccess(target())).cacheUrl}\n`);
      }),
    );
  cache
    .command("push <paths...>")
    .description("copy store paths and their closures to the cache (nix copy --to); the coordinator signs them with the organization's key")
    .action((paths: string[]) =>
      run(async (out) => {
        const url = await pushToNixCache(target(), paths, (text) => process.stderr.write(text));
        out(`copied ${paths.join(" ")} to ${url}\n`);
      }),
    );

  nixKey
    .command("rm <name>")
    .description("delete a key: paths it signed stay signed, but nothing new is signed with it")
    .action((name: string) =>
      run(async (out) => {
        await (await client()).deleteNixKey({ name });
        out(`deleted Nix key ${name}\n`);
      }),
    );
}
