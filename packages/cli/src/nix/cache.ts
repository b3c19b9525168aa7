/** The organization's Nix binary cache on the coordinator, as the admin's `nix` reaches it. */
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fetchPinnedCertificate } from "@flotilla/protocol";
import { adminClient, targetUrl, type AdminTarget } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";

/**
 * The organization's binary-cache URL and a token nix may present for it: the API token
 * (FLOTILLA_TOKEN) or the admin's current session, logging in first when needed.
 */
export async function nixCacheAccess(target: AdminTarget): Promise<{ cacheUrl: string; token: string; pin: string | undefined }> {
  const url = await targetUrl(target);
  const me = await (await adminClient(target)).whoAmI({});
  const orgId = me.organization?.id;
  if (!orgId) throw new Error("the coordinator did not say which organization this is");
  const entry = (await Credentials.of(target).context()).coordinators[url];
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
