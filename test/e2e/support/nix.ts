/**
 * Real Nix for the NixOS tests: Debian's `nix-bin`, single-user, run as root on the machine's
 * /nix/store (builds need no nixbld group and no sandbox). Every test builds derivations of its
 * own (a random tag in the name), so tests never share a store path, and deletes what it uploaded
 * so the agent side must fetch it back from the coordinator.
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Fleet } from "./fleet.ts";
import type { Sandbox } from "./sandbox.ts";

const exec = promisify(execFile);

/** Settings for every nix the tests run: no daemon users, no sandbox, no cache.nixos.org. */
export const nixEnv: NodeJS.ProcessEnv = {
  ...process.env,
  NIX_CONFIG: "experimental-features = nix-command\nsandbox = false\nbuild-users-group =\nsubstituters =\n",
};

export interface NixResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a nix command; never throws for a non-zero exit. */
export async function nix(program: string, args: string[]): Promise<NixResult> {
  try {
    const r = await exec(program, args, { env: nixEnv, maxBuffer: 16 * 1024 * 1024 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === "number" ? e.code : 1, stdout: e.stdout ?? "", stderr: e.stderr ?? String(err) };
  }
}

async function ok(program: string, args: string[]): Promise<string> {
  const r = await nix(program, args);
  if (r.code !== 0) throw new Error(`${program} ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

const SYSTEM_NIX = `{ tag, log, exitCode }:
let dep = derivation {
  name = "dep-\${tag}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  args = [ "-c" "mkdir -p $out; echo \${tag} > $out/greeting" ];
};
in derivation {
  name = "nixos-system-\${tag}"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin";
  inherit log exitCode dep;
  args = [ "-c" ''
    mkdir -p $out/bin
    ln -s $dep $out/dep
    printf '#!/bin/sh\\necho "%s $1" >> "%s"\\n[ -f "%s.kill" ] && kill -9 "$(cat "%s.kill")"\\nexit %s\\n' "$out" "$log" "$log" "$log" "$exitCode" > $out/bin/switch-to-configuration
    chmod +x $out/bin/switch-to-configuration
  '' ];
}
`;

/**
 * Builds a NixOS-like system: a store path with `bin/switch-to-configuration` that appends
 * "<its store path> <argument>" to `log` and exits with `exitCode`, referring to a second path.
 * When a file `<log>.kill` holds a pid, the script kills that process with SIGKILL (a switch
 * that takes the network, or the coordinator, away).
 */
export async function buildSystem(sb: Sandbox, log: string, exitCode = 0): Promise<string> {
  const dir = await sb.dir("flotilla-nixexpr-");
  await writeFile(join(dir, "system.nix"), SYSTEM_NIX);
  const tag = randomBytes(5).toString("hex");
  return ok("nix-build", [join(dir, "system.nix"), "--argstr", "tag", tag, "--argstr", "log", log, "--argstr", "exitCode", String(exitCode), "--no-out-link"]);
}

/** The closure of a local store path, itself included. */
export async function closure(path: string): Promise<string[]> {
  return (await ok("nix-store", ["-qR", path])).split("\n").filter(Boolean);
}

/** Deletes paths from the local store, so only the coordinator's cache has them. */
export async function deleteFromStore(paths: string[]): Promise<void> {
  await ok("nix-store", ["--delete", ...paths]);
}

/** A netrc for the coordinator at `url` with `token` as the password (what nix reads for basic auth). */
export async function writeNetrc(sb: Sandbox, url: string, token: string): Promise<string> {
  const path = join(await sb.dir("flotilla-netrc-"), "netrc");
  await writeFile(path, `machine ${new URL(url).hostname} login flotilla password ${token}\n`, { mode: 0o600 });
  return path;
}

/** An organization with a coordinator-held Nix key and an API token of `role`. */
export async function nixOrg(fleet: Fleet, role = "deployer"): Promise<{ publicKey: string; token: string; cacheUrl: string }> {
  const key = await fleet.admin(["nix-key", "create", "kiosk-cache"]);
  if (key.code !== 0) throw new Error(`nix-key create failed: ${key.stderr}`);
  return { publicKey: key.stdout.trim(), token: await apiToken(fleet, role), cacheUrl: `${fleet.url}/nix/default` };
}

export async function apiToken(fleet: Fleet, role: string): Promise<string> {
  const t = await fleet.admin(["token", "create", `${role}-${randomBytes(3).toString("hex")}`, "--role", role]);
  if (t.code !== 0) throw new Error(`token create failed: ${t.stderr}`);
  return t.stdout.trim().split("\n").pop()!;
}

/** `nix copy --to` the coordinator's cache (uncompressed, as it accepts). */
export function copyTo(cacheUrl: string, netrc: string, path: string): Promise<NixResult> {
  return nix("nix", ["copy", "--to", `${cacheUrl}?compression=none`, "--option", "netrc-file", netrc, path]);
}

/** A store path's hash part, as in `<hash>.narinfo`. */
export function hashPartOf(storePath: string): string {
  return storePath.slice("/nix/store/".length, "/nix/store/".length + 32);
}

/**
 * What an attacker holding a token with nix:write does to a released path: uploads a NAR of
 * other content (a `bin/switch-to-configuration` that appends "EVIL <argument>" to `log`) and an
 * unsigned narinfo naming `storePath` for it, which the coordinator signs with the
 * organization's key when it accepts it. Returns the HTTP status of each upload.
 */
export async function substitutePath(sb: Sandbox, cacheUrl: string, token: string, storePath: string, log: string): Promise<{ nar: number; narinfo: number; narinfoBody: string }> {
  const dir = join(await sb.dir("flotilla-evil-"), "system");
  await mkdir(join(dir, "bin"), { recursive: true });
  await writeFile(join(dir, "bin/switch-to-configuration"), `#!/bin/sh\necho "EVIL $1" >> "${log}"\n`, { mode: 0o755 });
  const dumped = await exec("nix-store", ["--dump", dir], { env: nixEnv, encoding: "buffer", maxBuffer: 16 * 1024 * 1024 });
  const nar = dumped.stdout;
  const hex = createHash("sha256").update(nar).digest("hex");
  const base32 = await ok("nix-hash", ["--type", "sha256", "--to-base32", hex]);
  const auth = { authorization: `Basic ${Buffer.from(`flotilla:${token}`).toString("base64")}` };
  const putNar = await fetch(`${cacheUrl}/nar/${base32}.nar`, { method: "PUT", headers: auth, body: nar });
  const narinfo = [
    `StorePath: ${storePath}`,
    `URL: nar/${base32}.nar`,
    "Compression: none",
    `FileHash: sha256:${base32}`,
    `FileSize: ${nar.length}`,
    `NarHash: sha256:${base32}`,
    `NarSize: ${nar.length}`,
    "References: ",
    "",
  ].join("\n");
  const putInfo = await fetch(`${cacheUrl}/${hashPartOf(storePath)}.narinfo`, { method: "PUT", headers: auth, body: narinfo });
  return { nar: putNar.status, narinfo: putInfo.status, narinfoBody: await putInfo.text() };
}

/**
 * Writes the `.nixos.json` artifact `release create --nixos` makes for a system in the local
 * store: its store path and closure manifest from `nix path-info --json --recursive`.
 */
export async function nixosArtifact(sb: Sandbox, system: string): Promise<string> {
  const info = JSON.parse(await ok("nix", ["path-info", "--json", "--recursive", system])) as { path: string; narHash: string; narSize: number }[];
  const closure = info.map(({ path, narHash, narSize }) => ({ path, narHash, narSize })).sort((a, b) => (a.path < b.path ? -1 : 1));
  const file = join(await sb.dir("flotilla-artifact-"), "kiosk.nixos.json");
  await writeFile(file, JSON.stringify({ storePath: system, closure }));
  return file;
}
