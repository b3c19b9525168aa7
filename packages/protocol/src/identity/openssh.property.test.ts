import { createPrivateKey, createPublicKey } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "../property-runs.ts";
import { identityFromPrivateKey, nodeId, rawPublicKey, verifySignature } from "./identity.ts";
import { formatOpenSshPublicKey, openSshPrivateKeyToPkcs8, parseAnyPublicKey, parseOpenSshPublicKey } from "./openssh.ts";

const RUNS = 200;
const runs = propertyRuns(RUNS);

const sshString = (b: Uint8Array | string): Buffer => {
  const data = Buffer.from(b);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  return Buffer.concat([len, data]);
};
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** The public key of a 32-byte ed25519 seed. */
function publicOf(seed: Uint8Array): Uint8Array {
  const key = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
  return rawPublicKey(createPublicKey(key));
}

/** An unencrypted openssh-key-v1 file, as ssh-keygen writes it (OpenSSH PROTOCOL.key). */
function openSshPrivateKeyFile(seed: Uint8Array, comment: string, check: number): string {
  const pub = publicOf(seed);
  const pubBlob = Buffer.concat([sshString("ssh-ed25519"), sshString(pub)]);
  let priv = Buffer.concat([u32(check), u32(check), sshString("ssh-ed25519"), sshString(pub), sshString(Buffer.concat([seed, pub])), sshString(comment)]);
  const pad = (8 - (priv.length % 8)) % 8;
  priv = Buffer.concat([priv, Buffer.from([1, 2, 3, 4, 5, 6, 7].slice(0, pad))]);
  const body = Buffer.concat([Buffer.from("openssh-key-v1\0"), sshString("none"), sshString("none"), sshString(""), u32(1), sshString(pubBlob), sshString(priv)]);
  const b64 = body.toString("base64").replace(/.{70}/g, "$&\n");
  return `-----BEGIN OPENSSH PRIVATE KEY-----\n${b64}\n-----END OPENSSH PRIVATE KEY-----\n`;
}

const seed = fc.uint8Array({ minLength: 32, maxLength: 32 });
const comment = fc.string({ unit: fc.constantFrom(..."abc@xyz.-_ 019"), maxLength: 30 }).map((s) => s.trim().replace(/\s+/g, " "));

/** The outcome of a parser: its value or the error it threw. */
function attempt<T>(fn: () => T): T | Error {
  try {
    return fn();
  } catch (err) {
    return err as Error;
  }
}

describe("OpenSSH key file properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("reads back the key and comment of every public key line it formats", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), comment, fc.constantFrom("", " ", "\n"), (key, c, pad) => {
        const line = formatOpenSshPublicKey(key, c);
        expect(parseOpenSshPublicKey(pad + line + pad)).toEqual({ publicKey: key, comment: c });
        expect(parseAnyPublicKey(line)).toEqual(key);
        expect(parseAnyPublicKey(nodeId(key))).toEqual(key);
      }),
      runs,
    );
  });

  it("answers any text, or a damaged public key line, with a 32-byte key or a plain Error", () => {
    const damaged = fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.nat(), fc.string({ maxLength: 4 }), fc.nat({ max: 120 })).map(([key, at, ins, cut]) => {
      const line = formatOpenSshPublicKey(key, "me@host");
      const i = at % line.length;
      return (line.slice(0, i) + ins + line.slice(i + 1)).slice(0, line.length - cut);
    });
    const blob = fc.uint8Array({ maxLength: 80 }).map((b) => `ssh-ed25519 ${Buffer.from(b).toString("base64")}`);
    fc.assert(
      fc.property(fc.oneof(fc.string(), damaged, blob), (text) => {
        for (const got of [attempt(() => parseAnyPublicKey(text)), attempt(() => parseOpenSshPublicKey(text).publicKey)]) {
          if (got instanceof Error) expect(got.constructor).toBe(Error);
          else expect(got.length).toBe(32);
        }
      }),
      runs,
    );
  });

  it("loads the signing key of every unencrypted OpenSSH ed25519 private key file", () => {
    fc.assert(
      fc.property(seed, comment, fc.nat(), (s, c, check) => {
        const identity = identityFromPrivateKey(createPrivateKey({ key: openSshPrivateKeyToPkcs8(openSshPrivateKeyFile(s, c, check)), format: "der", type: "pkcs8" }));
        expect(identity.publicKey).toEqual(publicOf(s));
        const msg = Buffer.from(c);
        expect(verifySignature(identity.publicKey, msg, identity.sign(msg))).toBe(true);
      }),
      runs,
    );
  });

  it("refuses a truncated or damaged private key file with a plain Error, never a crash", () => {
    fc.assert(
      fc.property(seed, fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (s, at, byte, keep) => {
        const pem = openSshPrivateKeyFile(s, "k", 7);
        const body = Buffer.from(pem.replace(/-----[A-Z ]+-----|\s/g, ""), "base64");
        const flipped = Buffer.from(body);
        flipped[at % body.length] = byte;
        for (const bytes of [flipped, body.subarray(0, keep % body.length)]) {
          const text = `-----BEGIN OPENSSH PRIVATE KEY-----\n${bytes.toString("base64")}\n-----END OPENSSH PRIVATE KEY-----\n`;
          const got = attempt(() => openSshPrivateKeyToPkcs8(text));
          if (got instanceof Error) expect(got.constructor).toBe(Error);
          else expect(got.length).toBe(48);
        }
      }),
      runs,
    );
  });

  it("never throws when verifying arbitrary keys, messages and signatures", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 40 }), fc.uint8Array({ maxLength: 70 }), (key, msg, sig) => {
        expect(typeof verifySignature(key, msg, sig)).toBe("boolean");
      }),
      runs,
    );
  });
});
