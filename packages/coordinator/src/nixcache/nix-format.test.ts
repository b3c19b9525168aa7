import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { fingerprint, formatNarInfo, formatSha256, fromNixBase32, parseNarInfo, parseSha256, toNixBase32 } from "./nix-format.ts";

const sha = (s: string) => createHash("sha256").update(s).digest("hex");
const SYS = "/nix/store/m83ihfsc6mgxl7i9mi2j7156gsnpzmw6-nixos-system";
const DEP = "j55hhy74bl07d7nbniqwwb0mgaa3dhj9-dep";

function narinfo(over: Record<string, string | string[]> = {}): string {
  const fields: Record<string, string | string[]> = {
    StorePath: SYS,
    URL: `nar/${toNixBase32(Buffer.from(sha("nar"), "hex"))}.nar`,
    Compression: "none",
    FileHash: formatSha256(sha("nar")),
    FileSize: "856",
    NarHash: formatSha256(sha("nar")),
    NarSize: "856",
    References: `${DEP} m83ihfsc6mgxl7i9mi2j7156gsnpzmw6-nixos-system`,
    ...over,
  };
  return Object.entries(fields)
    .flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x}`))
    .join("\n");
}

describe("nix-base32", () => {
  it("encodes sha256 digests as nix-hash --to-base32 does", () => {
    expect(toNixBase32(Buffer.from(sha(""), "hex"))).toBe("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
    expect(toNixBase32(Buffer.from(sha("flotilla"), "hex"))).toBe("0ccwdxdnk2plnl5g1mh42dnws3dd9l6245nn0xs1pyv4bjfipiq3");
  });

  it("decodes what it encodes and refuses characters outside its alphabet", () => {
    const digest = Buffer.from(sha("x"), "hex");
    expect(Buffer.from(fromNixBase32(toNixBase32(digest), 32))).toEqual(digest);
    expect(() => fromNixBase32("e".repeat(52), 32)).toThrow(/invalid base32/);
    expect(() => fromNixBase32("0".repeat(51), 32)).toThrow(/52/);
  });

  it("reads base32, hex and SRI sha256 forms alike", () => {
    const hex = sha("nar");
    expect(parseSha256(formatSha256(hex))).toBe(hex);
    expect(parseSha256(`sha256:${hex}`)).toBe(hex);
    expect(parseSha256(`sha256-${Buffer.from(hex, "hex").toString("base64")}`)).toBe(hex);
    expect(() => parseSha256("md5:abc")).toThrow(/not a sha256/);
  });
});

describe("narinfo", () => {
  it("parses what nix uploads and writes it back in the same form", () => {
    const info = parseNarInfo(narinfo({ Sig: ["k1:" + "A".repeat(86) + "==", "k2:" + "B".repeat(86) + "=="] }));
    expect(info.narSize).toBe(856);
    expect(info.references).toEqual([DEP, "m83ihfsc6mgxl7i9mi2j7156gsnpzmw6-nixos-system"]);
    expect(info.sigs).toHaveLength(2);
    expect(parseNarInfo(formatNarInfo(info))).toEqual(info);
  });

  it("signs the fingerprint with full reference paths, as nix does", () => {
    const info = parseNarInfo(narinfo());
    expect(fingerprint(info)).toBe(`1;${SYS};${formatSha256(sha("nar"))};856;/nix/store/${DEP},${SYS}`);
  });

  it.each([
    ["a path outside /nix/store", { StorePath: "/tmp/m83ihfsc6mgxl7i9mi2j7156gsnpzmw6-x" }, /StorePath/],
    ["a store path with a bad hash", { StorePath: "/nix/store/EEEE-x" }, /StorePath/],
    ["a reference with a slash", { References: "../../etc/passwd" }, /reference/],
    ["a size that is not a number", { NarSize: "-1" }, /NarSize/],
    ["a size beyond any closure", { NarSize: "999999999999999" }, /too large/],
    ["a URL outside nar/", { URL: "../secrets" }, /URL/],
    ["a malformed signature", { Sig: "k1:short" }, /Sig/],
    ["a repeated field", { NarHash: [formatSha256(sha("a")), formatSha256(sha("b"))] }, /duplicate/],
  ])("refuses %s", (_what, over, error) => {
    expect(() => parseNarInfo(narinfo(over))).toThrow(error);
  });
});
