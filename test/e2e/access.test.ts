/**
 * Organizations, members, API tokens, key revocation and the audit log, driven through the
 * `flotilla` CLI against a real coordinator process and its SQLite file.
 */
import { execFileSync } from "node:child_process";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import Database from "better-sqlite3";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { startSshAgent } from "./support/ssh.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const lastLine = (text: string) => text.trim().split("\n").pop()!;

describe("organizations, members and API tokens from the CLI", () => {
  it("creates an organization whose devices and tokens stay apart, selected with --org", async () => {
    const fleet = await new Fleet(sb).start();
    expect((await fleet.admin(["org", "create", "acme"])).code).toBe(0);
    const orgs = await fleet.adminJson<{ name: string; role: string }[]>(["org", "ls"]);
    expect(orgs.map((o) => `${o.name}:${o.role}`).sort()).toEqual(["acme:owner", "default:owner"]);

    const acmeToken = await fleet.admin(["--org", "acme", "join-token", "create", "--labels", "site=acme"]);
    expect(acmeToken.code, acmeToken.stderr).toBe(0);
    fleet.startAgent(await sb.dir("flotilla-agent-"), lastLine(acmeToken.stdout));
    // The agent enrolls in acme: it shows there, and the default organization never sees it.
    const inAcme = await waitFor("the device in acme", async () => {
      const r = await fleet.admin(["--org", "acme", "device", "ls", "--json"]);
      const devices = JSON.parse(r.stdout) as { labels: Record<string, string> }[];
      return devices.length === 1 ? devices : undefined;
    });
    expect(inAcme[0]!.labels).toEqual({ site: "acme" });
    expect(await fleet.adminJson<unknown[]>(["device", "ls"])).toEqual([]);
    expect(await fleet.adminJson<unknown[]>(["join-token", "ls"])).toHaveLength(0);
    const unknown = await fleet.admin(["--org", "globex", "device", "ls"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr.trim().split("\n")).toHaveLength(1);
  });

  it("gives CI a token that works through FLOTILLA_TOKEN with its role, until it is revoked", async () => {
    const fleet = await new Fleet(sb).start();
    const created = await fleet.admin(["token", "create", "ci-deploy", "--role", "viewer", "--expires", "90d"]);
    expect(created.code, created.stderr).toBe(0);
    const secret = lastLine(created.stdout);
    expect(secret).toMatch(/^flt_/);
    const ci = { FLOTILLA_TOKEN: secret, FLOTILLA_HOME: await sb.dir("flotilla-ci-") };

    expect((await fleet.admin(["device", "ls"], ci)).code).toBe(0);
    const denied = await fleet.admin(["join-token", "create"], ci);
    expect(denied.code).not.toBe(0);
    expect(denied.stderr).toMatch(/viewer may not CreateJoinToken/);

    const listed = await fleet.adminJson<{ name: string; role: string; revoked: boolean }[]>(["token", "ls"]);
    expect(listed).toEqual([expect.objectContaining({ name: "ci-deploy", role: "viewer", revoked: false })]);
    expect((await fleet.admin(["token", "revoke", "ci-deploy"])).code).toBe(0);
    const after = await fleet.admin(["device", "ls"], ci);
    expect(after.code).not.toBe(0);
    expect(after.stderr).toMatch(/not logged in|expired/);
  });

  it("adds a member with an OpenSSH key, who logs in with it; revoking the key ends that at once", async () => {
    const fleet = await new Fleet(sb).start();
    const home = await sb.dir("flotilla-alice-");
    const keyFile = join(home, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", keyFile]);
    const added = await fleet.admin(["member", "add", "alice@acme", "--role", "deployer", "--ssh-key", `${keyFile}.pub`]);
    expect(added.code, added.stderr).toBe(0);
    const alice = (args: string[]) => sb.run(["--coordinator", fleet.url, "--key", keyFile, ...args], { FLOTILLA_HOME: home });
    expect((await alice(["login"])).code).toBe(0);
    expect((await alice(["device", "ls"])).code).toBe(0);
    const denied = await alice(["member", "add", "mallory", "--role", "viewer"]);
    expect(denied.stderr).toMatch(/deployer may not AddMember/);

    const keys = await fleet.adminJson<{ id: string; member: string }[]>(["key", "ls"]);
    const aliceKey = keys.find((k) => k.member === "alice@acme")!;
    expect((await fleet.admin(["key", "revoke", aliceKey.id])).code).toBe(0);
    const after = await alice(["device", "ls"]);
    expect(after.code).not.toBe(0);
    expect(after.stderr).toMatch(/not registered/);
  });
});

describe("logging in through ssh-agent", () => {
  it("signs the login challenge with ssh-agent when --key names a public key or a passphrase-protected key", async () => {
    const fleet = await new Fleet(sb).start();
    const home = await sb.dir("flotilla-agentkey-");
    const keyFile = join(home, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "carol", "-f", keyFile]);
    expect((await fleet.admin(["member", "add", "carol", "--role", "viewer", "--ssh-key", `${keyFile}.pub`])).code).toBe(0);

    const sock = await startSshAgent(sb, [keyFile]);
    // The key file on disk is now protected by a passphrase Flotilla does not know.
    execFileSync("ssh-keygen", ["-q", "-p", "-P", "", "-N", "a passphrase nobody types", "-f", keyFile]);

    const carol = (key: string, env: Record<string, string>) =>
      sb.run(["--coordinator", fleet.url, "--key", key, "device", "ls", "--json"], { FLOTILLA_HOME: home, ...env });
    const withoutAgent = await carol(keyFile, { SSH_AUTH_SOCK: "" });
    expect(withoutAgent.code).not.toBe(0);
    expect(withoutAgent.stderr).toMatch(/encrypted with a passphrase.*SSH_AUTH_SOCK/);
    const viaEncrypted = await carol(keyFile, { SSH_AUTH_SOCK: sock });
    expect(viaEncrypted.code, viaEncrypted.stderr).toBe(0);
    await rm(join(home, "context.json"));
    const viaPublic = await carol(`${keyFile}.pub`, { SSH_AUTH_SOCK: sock });
    expect(viaPublic.code, viaPublic.stderr).toBe(0);
    const audit = await fleet.adminJson<{ actor: string; action: string }[]>(["audit", "ls", "--actor", "key:carol"]);
    expect(audit.filter((e) => e.action === "Login")).toHaveLength(2);
  });
});

describe("the audit log", () => {
  async function fleetWithHistory(): Promise<Fleet> {
    const fleet = await new Fleet(sb).start();
    for (const args of [["join-token", "create"], ["member", "add", "bob", "--role", "viewer"], ["token", "create", "ci", "--role", "viewer"]]) {
      expect((await fleet.admin(args)).code).toBe(0);
    }
    return fleet;
  }

  it("lists who did what, filtered by actor and time, and verifies", async () => {
    const fleet = await fleetWithHistory();
    const entries = await fleet.adminJson<{ seq: number; actor: string; action: string; target: string; outcome: string; source: string }[]>(["audit", "ls", "--since", "1h"]);
    expect(entries.map((e) => e.action)).toEqual(expect.arrayContaining(["CreateJoinToken", "AddMember", "CreateApiToken"]));
    expect(entries.find((e) => e.action === "AddMember")).toMatchObject({ target: "bob", outcome: "ok", source: expect.stringMatching(/127\.0\.0\.1/) });
    const actor = entries[0]!.actor;
    const byActor = await fleet.adminJson<{ actor: string }[]>(["audit", "ls", "--actor", actor]);
    expect(byActor.length).toBeGreaterThan(0);
    expect(byActor.every((e) => e.actor === actor)).toBe(true);
    expect(await fleet.adminJson<unknown[]>(["audit", "ls", "--actor", "key:nobody"])).toEqual([]);
    const verified = await fleet.admin(["audit", "verify"]);
    expect(verified.code).toBe(0);
    expect(verified.stdout).toMatch(/verifies: \d+ entries/);
  });

  it("fails `audit verify` and names the entry altered in the database", async () => {
    const fleet = await fleetWithHistory();
    const entries = await fleet.adminJson<{ seq: number; action: string }[]>(["audit", "ls"]);
    const victim = entries.find((e) => e.action === "AddMember")!;
    const db = new Database(join(fleet.dataDir, "flotilla.db"));
    try {
      const changed = db.prepare("UPDATE audit_log SET target = 'someone-else' WHERE seq = ?").run(victim.seq);
      expect(changed.changes).toBe(1);
    } finally {
      db.close();
    }
    const verify = await fleet.admin(["audit", "verify"]);
    expect(verify.code).not.toBe(0);
    expect(verify.stderr.trim()).toBe(`error: audit log does not verify: entry ${victim.seq} was altered (entry ${victim.seq})`);
  });

  it("fails `audit verify` when an entry was deleted, in the middle or at the end", async () => {
    const fleet = await fleetWithHistory();
    const entries = await fleet.adminJson<{ seq: number }[]>(["audit", "ls"]);
    const middle = entries[1]!.seq;
    const db = new Database(join(fleet.dataDir, "flotilla.db"));
    db.prepare("DELETE FROM audit_log WHERE seq = ?").run(middle);
    db.close();
    const verify = await fleet.admin(["audit", "verify"]);
    expect(verify.code).not.toBe(0);
    expect(verify.stderr).toMatch(new RegExp(`entry ${middle} is missing`));

    const fleet2 = await fleetWithHistory();
    const last = (await fleet2.adminJson<{ seq: number }[]>(["audit", "ls"])).at(-1)!.seq;
    const db2 = new Database(join(fleet2.dataDir, "flotilla.db"));
    // Deleting the newest entries leaves an intact chain; the stored head still notices.
    db2.prepare("DELETE FROM audit_log WHERE seq >= ?").run(last - 1);
    db2.close();
    const verify2 = await fleet2.admin(["audit", "verify"]);
    expect(verify2.code).not.toBe(0);
    expect(verify2.stderr).toMatch(/were deleted/);
  });
});
