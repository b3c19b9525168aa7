import { existsSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { apiToken, buildSystem, closure, copyTo, deleteFromStore, nix, nixEnv, nixOrg, writeNetrc } from "./support/nix.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

interface PathInfo {
  path: string;
  narHash: string;
  narSize: number;
  references: string[];
  signatures?: string[];
}

async function pathInfo(args: string[]): Promise<PathInfo[]> {
  // Not what this machine's narinfo cache remembers from its own upload: what the cache serves.
  const r = await nix("nix", ["path-info", "--json", "--option", "narinfo-cache-positive-ttl", "0", ...args]);
  if (r.code !== 0) throw new Error(`nix path-info failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as PathInfo[];
}

describe("the coordinator's Nix binary cache", () => {
  it("takes a closure from `nix copy --to` with an API token, signs it, and serves it to `nix path-info` and `nix copy --from`", async () => {
    const fleet = await new Fleet(sb).start();
    const { publicKey, token, cacheUrl } = await nixOrg(fleet);
    const netrc = await writeNetrc(sb, fleet.url, token);
    const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));
    const paths = await closure(system);
    expect(paths).toHaveLength(2);
    const local = await pathInfo(["-r", system]);

    const up = await copyTo(cacheUrl, netrc, system);
    expect(up.stderr).not.toMatch(/error/i);
    expect(up.code).toBe(0);

    const remote = await pathInfo(["--store", cacheUrl, "--option", "netrc-file", netrc, "-r", system]);
    expect(remote.map((p) => p.path).sort()).toEqual(paths.sort());
    for (const p of remote) {
      const l = local.find((x) => x.path === p.path)!;
      expect(p.narHash).toBe(l.narHash);
      expect(p.narSize).toBe(l.narSize);
      expect(p.references.sort()).toEqual(l.references.sort());
      expect(p.signatures?.[0]).toMatch(/^kiosk-cache:/);
    }

    await deleteFromStore(paths);
    expect(existsSync(system)).toBe(false);
    const down = await nix("nix", [
      "copy", "--from", cacheUrl, "--option", "netrc-file", netrc,
      "--option", "require-sigs", "true", "--option", "trusted-public-keys", publicKey, system,
    ]);
    expect(down.code, down.stderr).toBe(0);
    expect(existsSync(join(system, "bin/switch-to-configuration"))).toBe(true);
    expect(existsSync(join(system, "dep/greeting"))).toBe(true);
  });

  it("answers nothing without a token, lets a viewer read but not write, and keeps organizations apart", async () => {
    const fleet = await new Fleet(sb).start();
    const { cacheUrl } = await nixOrg(fleet);
    const viewer = await apiToken(fleet, "viewer");
    const basic = (t: string) => ({ authorization: `Basic ${Buffer.from(`flotilla:${t}`).toString("base64")}` });

    expect((await fetch(`${cacheUrl}/nix-cache-info`)).status).toBe(401);
    expect((await fetch(`${cacheUrl}/nix-cache-info`, { headers: basic("flt_nope.nope") })).status).toBe(401);
    const info = await fetch(`${cacheUrl}/nix-cache-info`, { headers: basic(viewer) });
    expect(info.status).toBe(200);
    expect(await info.text()).toContain("StoreDir: /nix/store");
    const put = await fetch(`${cacheUrl}/nar/${"0".repeat(52)}.nar`, { method: "PUT", headers: basic(viewer), body: "x" });
    expect(put.status).toBe(403);
    expect((await fetch(`${fleet.url}/nix/another-org/nix-cache-info`, { headers: basic(viewer) })).status).toBe(403);
  });

  it("refuses an upload whose signature by the organization's key name does not verify, and keeps nothing of it", async () => {
    const fleet = await new Fleet(sb).start();
    const { token, cacheUrl } = await nixOrg(fleet);
    const netrc = await writeNetrc(sb, fleet.url, token);
    const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));

    // A key with the organization's key name but other key material: its signatures cannot verify.
    const keys = await sb.dir("flotilla-forged-");
    const gen = await nix("nix-store", ["--generate-binary-cache-key", "kiosk-cache", join(keys, "sec"), join(keys, "pub")]);
    expect(gen.code, gen.stderr).toBe(0);
    const signed = await nix("nix", ["store", "sign", "--key-file", join(keys, "sec"), "-r", system]);
    expect(signed.code, signed.stderr).toBe(0);

    const up = await copyTo(cacheUrl, netrc, system);
    expect(up.code).not.toBe(0);
    expect(up.stderr).toMatch(/400/);
    const hashPart = system.slice("/nix/store/".length, "/nix/store/".length + 32);
    const res = await fetch(`${cacheUrl}/${hashPart}.narinfo`, { headers: { authorization: `Basic ${Buffer.from(`x:${token}`).toString("base64")}` } });
    expect(res.status).toBe(404);
    const audit = await fleet.adminJson<{ action: string; outcome: string; target: string }[]>(["audit", "ls"]);
    expect(audit.some((e) => e.action === "NixUpload" && e.outcome === "refused")).toBe(true);
  });

  it("refuses an unsigned upload when the coordinator holds only the public key, and takes one signed by its secret key", async () => {
    const fleet = await new Fleet(sb).start();
    const keys = await sb.dir("flotilla-nixkey-");
    expect((await nix("nix-store", ["--generate-binary-cache-key", "ci-key", join(keys, "sec"), join(keys, "pub")])).code).toBe(0);
    const imported = await fleet.admin(["nix-key", "import", join(keys, "pub")]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toMatch(/^ci-key:.* \(public only/);
    const token = await apiToken(fleet, "deployer");
    const netrc = await writeNetrc(sb, fleet.url, token);
    const cacheUrl = `${fleet.url}/nix/default`;
    const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));

    const unsigned = await copyTo(cacheUrl, netrc, system);
    expect(unsigned.code).not.toBe(0);

    expect((await nix("nix", ["store", "sign", "--key-file", join(keys, "sec"), "-r", system])).code).toBe(0);
    const signed = await copyTo(cacheUrl, netrc, system);
    expect(signed.code, signed.stderr).toBe(0);
    const remote = await pathInfo(["--store", cacheUrl, "--option", "netrc-file", netrc, system]);
    expect(remote[0]?.signatures).toEqual([expect.stringMatching(/^ci-key:/)]);
  });

  it("`flotilla nix-cache push` copies a closure with the admin's own login, signed by the organization's key", async () => {
    const fleet = await new Fleet(sb).start();
    const { token } = await nixOrg(fleet);
    const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));

    const url = await fleet.admin(["nix-cache", "url"]);
    expect(url.code, url.stderr).toBe(0);
    const cacheUrl = url.stdout.trim();
    expect(cacheUrl).toMatch(new RegExp(`^${fleet.url}/nix/org_`));
    const push = await fleet.admin(["nix-cache", "push", system], { NIX_CONFIG: nixEnv.NIX_CONFIG ?? "" });
    expect(push.code, push.stderr).toBe(0);

    const remote = await pathInfo(["--store", cacheUrl, "--option", "netrc-file", await writeNetrc(sb, fleet.url, token), "-r", system]);
    expect(remote).toHaveLength(2);
    expect(remote.every((p) => p.signatures?.[0]?.startsWith("kiosk-cache:"))).toBe(true);
  });

  it("`flotilla nix-key` creates, lists and deletes the organization's keys; a viewer lists but may not create", async () => {
    const fleet = await new Fleet(sb).start();
    const created = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
    expect(created.code, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/^kiosk-cache:[A-Za-z0-9+/]{43}=\n$/);
    const again = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/already has a Nix key named kiosk-cache/);
    const bad = await fleet.admin(["nix-key", "import", "kiosk:bm90IGEga2V5"]);
    expect(bad.code).toBe(2);

    const viewer = await apiToken(fleet, "viewer");
    const listed = await fleet.admin(["nix-key", "ls"], { FLOTILLA_TOKEN: viewer });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toBe(created.stdout);
    const denied = await fleet.admin(["nix-key", "create", "mine"], { FLOTILLA_TOKEN: viewer });
    expect(denied.code).toBe(4);

    expect((await fleet.admin(["nix-key", "rm", "kiosk-cache"])).code).toBe(0);
    expect((await fleet.admin(["nix-key", "ls"])).stdout).toBe("");
    expect((await fleet.admin(["nix-key", "rm", "kiosk-cache"])).code).toBe(5);
  });
});
