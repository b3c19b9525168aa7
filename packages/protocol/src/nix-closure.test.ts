import { describe, expect, it } from "vitest";
import { closureMismatch, normalizeNarHash, parseNixosArtifact, parsePathInfoJson } from "./nix-closure.ts";

const A = "/nix/store/iw6649682qqrkkfwk2dcn7nysaln3y5f-dep-x1";
const B = "/nix/store/j98giz3nvnwilga81cmazxa49c9pkyg9-top-x1";
const HA = "sha256-EFUdrtf6Rn0LWIJufrmg8q99aT3jGfLvd1//zaJEufY=";
const HB = "sha256-4kdbhOa8J3yXCVR3S2TUpKUUGvSL36DBCN+Fotlnezg=";

describe("closure manifests", () => {
  it("reads nix path-info's JSON as nix 2.8 prints it (an array) and as 2.19 on print it (keyed by path)", () => {
    // Debian's nix 2.8, verbatim but for the order.
    const old = `[{"path":"${B}","narHash":"${HB}","narSize":168,"references":["${A}"],"deriver":"/nix/store/rv7z59xrk41z71ibf58jfmns0z8z8n8x-top-x1.drv","registrationTime":1796054363,"ultimate":true},{"path":"${A}","narHash":"${HA}","narSize":120,"references":[],"registrationTime":1796054363}]`;
    const expected = [
      { path: A, narHash: HA, narSize: 120 },
      { path: B, narHash: HB, narSize: 168 },
    ];
    expect(parsePathInfoJson(old)).toEqual(expected);
    const keyed = JSON.stringify({ [B]: { narHash: HB, narSize: 168, references: [A] }, [A]: { narHash: HA, narSize: 120, references: [] } });
    expect(parsePathInfoJson(keyed)).toEqual(expected);
    expect(() => parsePathInfoJson(JSON.stringify({ [A]: null }))).toThrow(/not a valid store path here/);
    expect(() => parsePathInfoJson("[]")).toThrow(/no paths/);
  });

  it("normalizes a NarHash from base32, hex or SRI to SRI, and refuses anything else", () => {
    const hex = Buffer.from(HA.slice("sha256-".length), "base64").toString("hex");
    expect(normalizeNarHash(`sha256:${hex}`)).toBe(HA);
    expect(normalizeNarHash(HA)).toBe(HA);
    // nix-hash --type sha256 --to-base32 of the same digest.
    expect(normalizeNarHash("sha256:1xmr8jicvzszfzpz46g37mlpvbzjl2wpwvl2b05psipssyp1sm8h")).toBe(HA);
    expect(() => normalizeNarHash("md5:abc")).toThrow(/not a sha256/);
    expect(() => normalizeNarHash(`sha256:${"e".repeat(52)}`)).toThrow();
  });

  it("names the first difference between the pinned and the fetched closure", () => {
    const pinned = [
      { path: A, narHash: HA, narSize: 120 },
      { path: B, narHash: HB, narSize: 168 },
    ];
    expect(closureMismatch(pinned, pinned)).toBeUndefined();
    expect(closureMismatch(pinned, [pinned[1]!])).toBe(`${A} is in the release's closure manifest but not in the closure nix fetched`);
    expect(closureMismatch(pinned, [{ ...pinned[0]!, narHash: HB }, pinned[1]!])).toBe(`${A} has NarHash ${HB} here, but the release pins ${HA}`);
    expect(closureMismatch(pinned, [{ ...pinned[0]!, narSize: 1 }, pinned[1]!])).toBe(`${A} has NarSize 1 here, but the release pins 120`);
    expect(closureMismatch([pinned[1]!], pinned)).toBe(`${A} is in the closure nix fetched but not in the release's closure manifest`);
    // Other bytes under a pinned path are named before a missing path, in whatever order the manifest lists them.
    for (const manifest of [pinned, [...pinned].reverse()]) {
      expect(closureMismatch(manifest, [{ ...pinned[1]!, narHash: HA }])).toBe(`${B} has NarHash ${HA} here, but the release pins ${pinned[1]!.narHash}`);
    }
  });

  it("reads an artifact with or without a manifest, and refuses one whose manifest lacks the system or repeats a path", () => {
    expect(parseNixosArtifact(JSON.stringify({ storePath: B }))).toEqual({ storePath: B });
    const closure = [{ path: B, narHash: HB, narSize: 168 }];
    expect(parseNixosArtifact(JSON.stringify({ storePath: B, closure, later: "ignored" }))).toEqual({ storePath: B, closure });
    expect(() => parseNixosArtifact(JSON.stringify({ storePath: A, closure }))).toThrow(/does not contain the system/);
    expect(() => parseNixosArtifact(JSON.stringify({ storePath: B, closure: [...closure, ...closure] }))).toThrow(/listed twice/);
    expect(() => parseNixosArtifact(JSON.stringify({ storePath: B, closure: [{ ...closure[0], narHash: "sha256:x" }] }))).toThrow(/closure\.0\.narHash/);
    expect(() => parseNixosArtifact("{")).toThrow(/not JSON/);
  });
});
