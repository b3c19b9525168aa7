import { execFileSync } from "node:child_process";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { Code, createClient } from "@connectrpc/connect";
import { SignedTargets } from "@flotilla/cli/testing";
import { adminv1, bearerInterceptor, coordinatorTransport, type ReleaseMeta } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { artifact, files, ownerToken, patchUpload, sha256, signedFleet, uploadState } from "./support/releases.ts";
import { startSshAgent } from "./support/ssh.ts";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("artifact uploads", () => {
  it("resumes an interrupted upload where it stopped, and stores the artifact once", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const { path, data } = await artifact(dir, "app.tar.gz", 4 * 1024 * 1024);
    const sha = sha256(data);
    const token = await ownerToken(fleet);

    // A client dies after sending part of the artifact.
    expect(await patchUpload(fleet, token, { sha256: sha, length: data.length, offset: 0, body: data, complete: true, breakAfter: 1024 * 1024 })).toBe("broken");
    const partial = await waitFor("the partial upload to be recorded", async () => {
      const s = await uploadState(fleet, token, sha, data.length);
      return !s.complete && s.offset > 0 ? s : undefined;
    });
    expect(partial.offset).toBeLessThan(data.length);

    const r = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain(`resuming at byte ${partial.offset}`);
    const stored = await readFile(join(fleet.dataDir, "artifacts", "sha256", sha));
    expect(sha256(stored)).toBe(sha);
    expect(await files(join(fleet.dataDir, "artifacts", "uploads"))).toEqual([]);
    const audit = await fleet.adminJson<{ action: string; target: string; outcome: string }[]>(["audit", "ls"]);
    expect(audit.filter((e) => e.action === "UploadArtifact").map((e) => [e.target, e.outcome])).toEqual([[sha, "ok"]]);

    // The same bytes again, as another release: nothing is uploaded twice.
    const again = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.1", "--run", "bin/app"]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain("already on the coordinator");
    expect(await files(join(fleet.dataDir, "artifacts", "sha256"))).toEqual([sha]);
    const ls = await fleet.adminJson<{ version: string; counter: number; sha256: string }[]>(["release", "ls"]);
    expect(ls.map((x) => [x.version, x.counter, x.sha256])).toEqual([["1.0.0", 1, sha], ["1.0.1", 2, sha]]);
  });

  it("refuses a truncated upload and a wrong-hash upload clearly, keeping nothing of either", async () => {
    const fleet = await signedFleet(sb);
    const token = await ownerToken(fleet);
    const data = Buffer.alloc(100_000, 7);
    const sha = sha256(data);

    const truncated = await patchUpload(fleet, token, { sha256: sha, length: data.length, offset: 0, body: data.subarray(0, 60_000), complete: true });
    expect(truncated).toMatchObject({ status: 400 });
    expect(truncated !== "broken" && truncated.body).toContain("upload truncated: received 60000 of 100000 bytes");

    const wrong = sha256(Buffer.from("something else"));
    const mismatch = await patchUpload(fleet, token, { sha256: wrong, length: data.length, offset: 0, body: data, complete: true });
    expect(mismatch).toMatchObject({ status: 422 });
    expect(mismatch !== "broken" && mismatch.body).toContain(`upload does not match its sha256: expected ${wrong}, got ${sha}`);

    const tooLong = await patchUpload(fleet, token, { sha256: sha, length: 10, offset: 0, body: data.subarray(0, 20), complete: true });
    expect(tooLong).toMatchObject({ status: 413 });

    expect(await files(join(fleet.dataDir, "artifacts", "sha256"))).toEqual([]);
    expect(await files(join(fleet.dataDir, "artifacts", "uploads"))).toEqual([]);
    expect(await uploadState(fleet, token, sha, data.length)).toEqual({ complete: false, offset: 0 });
    // Refused uploads are in the audit log, with why.
    const audit = await fleet.adminJson<{ action: string; target: string; outcome: string }[]>(["audit", "ls"]);
    expect(audit.filter((e) => e.action === "UploadArtifact").map((e) => [e.target, e.outcome])).toEqual([
      [sha, expect.stringMatching(/^refused: upload truncated/)],
      [wrong, expect.stringMatching(/^refused: upload does not match its sha256/)],
    ]);
  });

  it("lets another organization use an artifact only once it has uploaded the bytes itself", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const { path, data } = await artifact(dir, "app.tar.gz", 300_000);
    const sha = sha256(data);
    const created = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"]);
    expect(created.code, created.stderr).toBe(0);
    const [mine] = await fleet.adminJson<{ targetPath: string; sha256: string; length: number; meta: ReleaseMeta }[]>(["release", "ls"]);

    // A second organization on the same coordinator, with its own signing key and an admin token.
    expect((await fleet.admin(["org", "create", "globex"])).code).toBe(0);
    const keyAdded = await fleet.admin(["--org", "globex", "signing-key", "add"]);
    expect(keyAdded.code, keyAdded.stderr).toBe(0);
    const tokenCreated = await fleet.admin(["--org", "globex", "token", "create", "globex-admin", "--role", "admin"]);
    expect(tokenCreated.code, tokenCreated.stderr).toBe(0);
    const other = tokenCreated.stdout.trim().split("\n").pop()!;

    // Knowing the sha256 is not having the bytes: the artifact is not there for globex, however it asks.
    expect(await uploadState(fleet, other, sha, data.length)).toEqual({ complete: false, offset: 0 });
    const nothing = await patchUpload(fleet, other, { sha256: sha, length: data.length, offset: 0, body: Buffer.alloc(0), complete: false });
    expect(nothing).toEqual({ status: 200, body: JSON.stringify({ complete: false, offset: 0 }) });

    // Signing the default organization's release into globex's targets, without the bytes, is refused...
    const conn = await coordinatorTransport({ url: fleet.url, interceptors: [bearerInterceptor(() => other)] });
    sb.onCleanup(async () => conn.close());
    const client = createClient(adminv1.ReleaseService, conn.transport);
    const asGlobex = { home: fleet.adminHome, coordinator: fleet.url, apiToken: other };
    const current = await SignedTargets.load(client, asGlobex);
    const signer = { keyFile: [join(fleet.adminHome, "admin.key")] };
    const forged = current.publish(client, asGlobex, [{ path: mine!.targetPath, length: mine!.length, sha256: sha, meta: mine!.meta }], signer, 3_600_000);
    await expect(forged).rejects.toMatchObject({
      code: Code.FailedPrecondition,
      rawMessage: `artifact ${sha} of ${mine!.targetPath} is not uploaded completely (0 of ${data.length} bytes): upload it first`,
    });
    expect(await fleet.adminJson<unknown[]>(["--org", "globex", "release", "ls"])).toEqual([]);
    // ...so globex cannot download it, while the default organization can.
    const download = (token: string) => fetch(`${fleet.url}/tuf/v1/targets/app/1/${sha}.app.tar.gz`, { headers: { authorization: `Bearer ${token}` } });
    expect((await download(other)).status).toBe(404);
    expect((await download(await ownerToken(fleet))).status).toBe(200);

    // Once globex uploads the bytes itself, they are its to release; the coordinator still holds one copy.
    const own = await fleet.admin(["--org", "globex", "release", "create", path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"]);
    expect(own.code, own.stderr).toBe(0);
    expect(own.stderr).toContain(`uploading ${data.length} bytes`);
    expect(own.stderr).not.toContain("already on the coordinator");
    expect(await files(join(fleet.dataDir, "artifacts", "sha256"))).toEqual([sha]);
    expect(await files(join(fleet.dataDir, "artifacts", "uploads"))).toEqual([]);
    expect(await uploadState(fleet, other, sha, data.length)).toEqual({ complete: true, offset: data.length });
    const theirs = await download(other);
    expect(theirs.status).toBe(200);
    expect(sha256(Buffer.from(await theirs.arrayBuffer()))).toBe(sha);
    const audit = await fleet.adminJson<{ action: string; target: string; outcome: string }[]>(["--org", "globex", "audit", "ls"]);
    expect(audit.filter((e) => e.action === "UploadArtifact").map((e) => [e.target, e.outcome])).toEqual([[sha, "ok"]]);
  });

  it("refuses uploads without an admin session", async () => {
    const fleet = await signedFleet(sb);
    const data = Buffer.from("x");
    const res = await patchUpload(fleet, "not-a-token", { sha256: sha256(data), length: 1, offset: 0, body: data, complete: true });
    expect(res).toMatchObject({ status: 401 });
  });
});

describe("signing", () => {
  it("refuses a release signed by a key outside the targets threshold", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const outsider = join(dir, "outsider");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", outsider]);
    const { path } = await artifact(dir, "app.tar.gz", 1000);
    const r = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--key-file", outsider]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error: targets metadata is not signed by the root's targets threshold of keys/m);
    expect(await fleet.adminJson<unknown[]>(["release", "ls"])).toEqual([]);
  });

  it("rotates root only with the current threshold's signatures, and then enforces the new threshold", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const second = join(dir, "second");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", second]);
    const owner = join(fleet.adminHome, "admin.key");

    const alone = await fleet.admin(["signing-key", "add", "--key-file", second]);
    expect(alone.code).not.toBe(0);
    expect(alone.stderr).toContain("root metadata is not signed by the current root's threshold");

    const both = await fleet.admin(["signing-key", "add", "--key-file", owner, "--key-file", second, "--threshold", "2"]);
    expect(both.code, both.stderr).toBe(0);
    const keys = await fleet.adminJson<{ version: number; threshold: number; keys: { roles: string[] }[] }>(["signing-key", "ls"]);
    expect(keys.version).toBe(2);
    expect(keys.threshold).toBe(2);
    expect(keys.keys.filter((k) => k.roles.includes("targets"))).toHaveLength(2);

    const { path } = await artifact(dir, "app.tar.gz", 1000);
    const one = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--key-file", owner]);
    expect(one.code).not.toBe(0);
    expect(one.stderr).toContain("not signed by the root's targets threshold");
    const two = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--key-file", owner, "--key-file", second]);
    expect(two.code, two.stderr).toBe(0);
    expect(await readdir(join(fleet.dataDir, "tuf", (await readdir(join(fleet.dataDir, "tuf")))[0]!))).toContain("2.root.json");
  });

  it("signs with an ed25519 key held by a real ssh-agent", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const key = join(dir, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", key]);
    const sock = await startSshAgent(sb, [key]);
    const env = { SSH_AUTH_SOCK: sock };

    const owner = join(fleet.adminHome, "admin.key");
    const add = await fleet.admin(["signing-key", "add", "--ssh-agent", "--key-file", owner], env);
    expect(add.code, add.stderr).toBe(0);
    expect(add.stdout).toContain("ssh-agent:alice@laptop");

    const { path } = await artifact(dir, "app.tar.gz", 1000);
    const r = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0", "--ssh-agent"], env);
    expect(r.code, r.stderr).toBe(0);
    expect((await stat(key)).mode & 0o077).toBe(0);
  });

  it("finds the signing key by itself among the admin key and ssh-agent's keys, and says which keys the root takes when none is at hand", async () => {
    const fleet = await new Fleet(sb).start();
    const dir = await sb.dir();
    const key = join(dir, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", key]);
    const sock = await startSshAgent(sb, [key]);
    // The root's only signing key is the one in ssh-agent, not the admin key.
    const add = await fleet.admin(["signing-key", "add", "--ssh-agent"], { SSH_AUTH_SOCK: sock });
    expect(add.code, add.stderr).toBe(0);
    const keyId = /^ {2}([0-9a-f]{64}) {2}ssh-agent:alice@laptop$/m.exec(add.stdout)![1]!;

    const { path } = await artifact(dir, "app.tar.gz", 1000);
    const found = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.0"], { SSH_AUTH_SOCK: sock });
    expect(found.code, found.stderr).toBe(0);

    const none = await fleet.admin(["release", "create", path, "--name", "app", "--version", "1.0.1"], { SSH_AUTH_SOCK: "" });
    expect(none.code).toBe(2);
    const lines = none.stderr.trim().split("\n");
    expect(lines, none.stderr).toHaveLength(1);
    expect(lines[0]).toContain(`it takes 1 of ${keyId.slice(0, 16)}`);
    expect(lines[0]).toMatch(/^error: none of the keys at hand \(admin key [0-9a-f]{16}\) may sign .*--key FILE .*--ssh-agent .*--key-file FILE$/);
    expect((await fleet.adminJson<{ version: string }[]>(["release", "ls"])).map((r) => r.version)).toEqual(["1.0.0"]);
  });
});
