import { describe, expect, it } from "vitest";
import { canonicalJson, tufRootDigest } from "../tuf-key.ts";
import { encodeJoinString, MAX_FAILOVER_URLS, parseJoinString, withFailoverUrls } from "./join-string.ts";

const base = { url: "https://coord.example:7700", pin: "A".repeat(43), secret: "tok1.abcdefghijklmnopqrstuvwxyz" };
const raw = (body: unknown) => `flotilla-join-v1.${Buffer.from(JSON.stringify(body)).toString("base64url")}`;

describe("join strings", () => {
  it("carry the organization's root digest when there is one, and older ones without it still parse", () => {
    const root = { version: 3, sha256: "ab".repeat(32) };
    expect(parseJoinString(encodeJoinString({ ...base, root }))).toEqual({ ...base, root });
    expect(parseJoinString(encodeJoinString(base))).toEqual(base);
    expect(parseJoinString(raw({ u: base.url, p: base.pin, s: base.secret }))).toEqual(base);
  });

  it("refuse a malformed root digest with one line", () => {
    for (const r of [null, "x", { v: 0, h: "ab".repeat(32) }, { v: 1.5, h: "ab".repeat(32) }, { v: 1, h: "AB".repeat(32) }, { v: 1, h: "ab" }, { h: "ab".repeat(32) }]) {
      expect(() => parseJoinString(raw({ u: base.url, p: base.pin, s: base.secret, r })), JSON.stringify(r)).toThrow(/^invalid join string: bad signing root digest$/);
    }
  });

  it("carry more coordinator addresses to fail over to, without duplicates or the first one", () => {
    const failoverUrls = ["https://b.example:7700", "http://10.0.0.3:7700"];
    expect(parseJoinString(encodeJoinString({ ...base, failoverUrls }))).toEqual({ ...base, failoverUrls });
    const added = withFailoverUrls(encodeJoinString(base), ["https://b.example:7700/", base.url, "https://b.example:7700"]);
    expect(parseJoinString(added)).toEqual({ ...base, failoverUrls: ["https://b.example:7700"] });
    expect(withFailoverUrls(encodeJoinString(base), [])).toBe(encodeJoinString(base));
  });

  it("refuse malformed failover addresses with one line", () => {
    const many = Array.from({ length: MAX_FAILOVER_URLS + 1 }, (_, i) => `https://r${i}.example`);
    for (const f of ["https://b.example", [1], ["ftp://b.example"], ["not a url"], many]) {
      expect(() => parseJoinString(raw({ u: base.url, p: base.pin, s: base.secret, f })), JSON.stringify(f)).toThrow(/^invalid join string: /);
    }
  });
});

describe("tufRootDigest", () => {
  const signed = { _type: "root", version: 2, keys: { b: 1, a: "x\"y\\z" }, roles: [] };
  it("hashes the canonical form of the signed part: key order and signatures do not matter", () => {
    expect(canonicalJson(signed)).toBe('{"_type":"root","keys":{"a":"x\\"y\\\\z","b":1},"roles":[],"version":2}');
    const reordered = { roles: [], version: 2, keys: { a: "x\"y\\z", b: 1 }, _type: "root" };
    expect(tufRootDigest({ signed, signatures: [] })).toEqual(tufRootDigest({ signatures: [{ keyid: "k", sig: "00" }], signed: reordered }));
    expect(tufRootDigest({ signed, signatures: [] }).version).toBe(2);
    expect(tufRootDigest({ signed: { ...signed, version: 3 } }).sha256).not.toBe(tufRootDigest({ signed }).sha256);
  });

  it("refuses what is not root metadata", () => {
    expect(() => tufRootDigest({ signed: { ...signed, _type: "targets" } })).toThrow(/not root metadata/);
    expect(() => tufRootDigest(null)).toThrow(/not root metadata/);
    expect(() => canonicalJson({ a: 1.5 })).toThrow(TypeError);
  });
});
