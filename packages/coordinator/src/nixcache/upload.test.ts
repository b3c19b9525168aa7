import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { fingerprint, formatSha256, parseNarInfo, toNixBase32 } from "./nix-format.ts";
import { generateIdentity } from "@flotilla/protocol";
import { formatPublicKey, generateNixKey, KeySealer, parseNixKey, signWith, verifyWith } from "./nix-keys.ts";
import { HttpError } from "../server/http.ts";
import { checkUpload, type UploadContext } from "./upload.ts";

const narHex = createHash("sha256").update("nar").digest("hex");
const HASH = "m83ihfsc6mgxl7i9mi2j7156gsnpzmw6";
const DEP = "j55hhy74bl07d7nbniqwwb0mgaa3dhj9-dep";

function info(sigs: string[] = [], refs = [DEP]) {
  return parseNarInfo(
    [
      `StorePath: /nix/store/${HASH}-system`,
      `URL: nar/${toNixBase32(Buffer.from(narHex, "hex"))}.nar`,
      "Compression: none",
      `FileHash: ${formatSha256(narHex)}`,
      "FileSize: 100",
      `NarHash: ${formatSha256(narHex)}`,
      "NarSize: 100",
      `References: ${refs.join(" ")}`,
      ...sigs.map((s) => `Sig: ${s}`),
    ].join("\n"),
  );
}

function context(over: Partial<UploadContext> = {}): UploadContext {
  return {
    keys: [generateNixKey("org-key")],
    narSize: async (hex) => (hex === narHex ? 100 : undefined),
    existing: async (parts) => new Set(parts),
    ...over,
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(HttpError);
  return `${(err as HttpError).status} ${(err as HttpError).message}`;
}

describe("checking an upload", () => {
  it("signs an unsigned narinfo with the organization's key, in a form that verifies", async () => {
    const cx = context();
    const sigs = await checkUpload(info(), HASH, cx);
    expect(sigs).toHaveLength(1);
    expect(verifyWith(cx.keys, sigs[0]!, fingerprint(info()))).toBe(true);
  });

  it("keeps a valid signature of the organization's key and drops another cache's", async () => {
    const own = generateNixKey("own");
    const foreign = generateNixKey("cache.nixos.org-1");
    const i = info();
    const valid = signWith(own, fingerprint(i));
    const sigs = await checkUpload(info([valid, signWith(foreign, fingerprint(i))]), HASH, context({ keys: [{ name: own.name, publicKey: own.publicKey }] }));
    expect(sigs).toEqual([valid]);
  });

  it("refuses a signature by the organization's key name that does not verify", async () => {
    const forged = generateNixKey("org-key");
    const cx = context();
    expect(await refusal(checkUpload(info([signWith(forged, fingerprint(info()))]), HASH, cx))).toMatch(/^400 .*does not verify/);
  });

  it("refuses an unsigned narinfo when the coordinator holds no secret key", async () => {
    const pub = parseNixKey(formatPublicKey(generateNixKey("pub-only")));
    expect(await refusal(checkUpload(info(), HASH, context({ keys: [pub] })))).toMatch(/^400 .*no signature/);
  });

  it("refuses a narinfo whose NAR is missing or of another size, or whose references are not uploaded", async () => {
    expect(await refusal(checkUpload(info(), HASH, context({ narSize: async () => undefined })))).toMatch(/^409 upload the NAR/);
    expect(await refusal(checkUpload(info(), HASH, context({ narSize: async () => 99 })))).toMatch(/^400 NarSize/);
    expect(await refusal(checkUpload(info(), HASH, context({ existing: async () => new Set() })))).toMatch(/^409 references/);
    expect(await refusal(checkUpload(info(), "a".repeat(32), context()))).toMatch(/^400 .*StorePath/);
  });
});

describe("Nix keys", () => {
  it("reads back the secret key form it writes and refuses a mismatched public half", () => {
    const k = generateNixKey("k");
    const secret = `k:${Buffer.concat([k.seed!, k.publicKey]).toString("base64")}`;
    expect(parseNixKey(secret)).toEqual(k);
    const other = generateNixKey("k");
    expect(() => parseNixKey(`k:${Buffer.concat([k.seed!, other.publicKey]).toString("base64")}`)).toThrow(/does not match/);
    expect(() => parseNixKey("no-colon")).toThrow();
    expect(() => parseNixKey(`k:${Buffer.alloc(16).toString("base64")}`)).toThrow(/32 .* 64/);
  });

  it("seals secret keys so that only the same coordinator, for the same organization and name, opens them", () => {
    const id = generateIdentity();
    const seed = generateNixKey("k").seed!;
    const sealed = new KeySealer(id).seal(seed, "org_a\0k");
    expect(sealed).not.toContain(Buffer.from(seed).toString("base64"));
    expect(new KeySealer(id).open(sealed, "org_a\0k")).toEqual(seed);
    expect(() => new KeySealer(id).open(sealed, "org_b\0k")).toThrow();
    expect(() => new KeySealer(generateIdentity()).open(sealed, "org_a\0k")).toThrow();
  });
});
