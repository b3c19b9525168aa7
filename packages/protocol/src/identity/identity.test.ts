import { execFileSync } from "node:child_process";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "../testing-hooks.ts";
import {
  generateIdentity,
  keyPin,
  loadIdentity,
  loadOrCreateIdentity,
  parseNodeId,
  verifySignature,
} from "./identity.ts";
import { formatOpenSshPublicKey, parseAnyPublicKey, parseOpenSshPublicKey } from "./openssh.ts";

const dir = useTempDir("flotilla-id-");

describe("identity", () => {
  it("creates a key file with mode 0600 and loads the same identity again", async () => {
    const path = join(dir.path, "sub", "agent.key");
    const a = await loadOrCreateIdentity(path);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const b = await loadOrCreateIdentity(path);
    expect(b.id).toBe(a.id);
    expect(parseNodeId(a.id)).toEqual(a.publicKey);
  });

  it("signs so that only the matching public key verifies", () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const msg = new TextEncoder().encode("hello");
    const sig = a.sign(msg);
    expect(verifySignature(a.publicKey, msg, sig)).toBe(true);
    expect(verifySignature(b.publicKey, msg, sig)).toBe(false);
    expect(verifySignature(a.publicKey, new TextEncoder().encode("hellO"), sig)).toBe(false);
    expect(verifySignature(a.publicKey.subarray(1), msg, sig)).toBe(false);
  });

  it("pins distinct keys to distinct pins", () => {
    expect(keyPin(generateIdentity().publicKey)).not.toBe(keyPin(generateIdentity().publicKey));
  });

  it("round-trips OpenSSH public key lines and refuses other key types", () => {
    const id = generateIdentity();
    const line = formatOpenSshPublicKey(id.publicKey, "alice@laptop");
    expect(parseOpenSshPublicKey(line)).toEqual({ publicKey: id.publicKey, comment: "alice@laptop" });
    expect(parseAnyPublicKey(id.id)).toEqual(id.publicKey);
    expect(() => parseAnyPublicKey("ssh-rsa AAAAB3NzaC1yc2E= x")).toThrow(/ssh-ed25519/);
    expect(() => parseAnyPublicKey("hello")).toThrow(/not a public key/);
  });

  it("loads an unencrypted OpenSSH ed25519 key made by ssh-keygen, matching its .pub", async () => {
    const path = join(dir.path, "id_ed25519");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", path]);
    const id = await loadIdentity(path);
    const pub = parseOpenSshPublicKey(await readFile(`${path}.pub`, "utf8"));
    expect(id.publicKey).toEqual(pub.publicKey);
  });

  it("refuses a passphrase-protected OpenSSH key with a clear error", async () => {
    const path = join(dir.path, "id_locked");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "secret-pass", "-f", path]);
    await expect(loadIdentity(path)).rejects.toThrow(/encrypted/);
  });

  it("refuses a file that is not a key", async () => {
    const path = join(dir.path, "junk");
    await writeFile(path, "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n");
    await expect(loadIdentity(path)).rejects.toThrow(/not an OpenSSH private key/);
  });
});
