import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

it("registers an existing OpenSSH ed25519 key as an admin key, and that key logs in with --key", async () => {
  const fleet = await new Fleet(sb).start();
  const keyDir = await sb.dir("flotilla-ssh-");
  const key = join(keyDir, "id_ed25519");
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "bob@laptop", "-f", key]);

  const add = await fleet.admin(["key", "add", `${key}.pub`, "--name", "bob", "--role", "viewer"]);
  expect(add.code).toBe(0);
  expect(add.stdout).toMatch(/added viewer key bob \(SHA256:/);

  const bobHome = await sb.dir("flotilla-bob-");
  const bob = (args: string[]) => sb.run(["--coordinator", fleet.url, "--key", key, ...args], { FLOTILLA_HOME: bobHome });
  expect((await bob(["login"])).stdout).toMatch(/as viewer/);
  expect((await bob(["device", "ls"])).code).toBe(0);
  const denied = await bob(["join-token", "create"]);
  expect(denied.code).toBe(4);
  expect(denied.stderr).toMatch(/role viewer may not/);

  const keys = await fleet.adminJson<{ name: string; role: string }[]>(["key", "ls"]);
  expect(keys.map((k) => `${k.name}:${k.role}`).sort()).toEqual(["bob:viewer", "owner:owner"]);
  // The earlier name of `key ls` still answers the same, for scripts written against it.
  expect(await fleet.adminJson(["admin", "ls-keys"])).toEqual(keys);
});

it("points at the offending character of a bad selector and exits 2", async () => {
  const fleet = await new Fleet(sb).start();
  const r = await fleet.admin(["device", "ls", "--selector", "env=prod,arch in (x86_64"]);
  expect(r.code).toBe(2);
  const lines = r.stderr.trimEnd().split("\n");
  expect(lines[0]).toMatch(/invalid selector: .*column 25/);
  expect(lines[2]).toBe(`${" ".repeat(lines[1]!.indexOf("env") + 24)}^`);
});

it("says clearly when the coordinator cannot be reached", async () => {
  const home = await sb.dir("flotilla-admin-");
  const r = await sb.run(["--coordinator", "http://127.0.0.1:9", "login"], { FLOTILLA_HOME: home });
  expect(r.code).toBe(6);
  expect(r.stderr.trim()).toMatch(/^error: cannot reach the coordinator at http:\/\/127\.0\.0\.1:9/);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
});

it("refuses a usage mistake with exit code 2", async () => {
  const r = await sb.run(["device", "frobnicate"]);
  expect(r.code).toBe(2);
  expect(r.stderr).toMatch(/unknown command/);
});
