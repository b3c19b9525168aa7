import { describe, expect, it } from "vitest";
import { generateIdentity, keyPin } from "../identity/identity.ts";
import { endorseKey, endorsedByPin } from "./rotation.ts";

describe("coordinator key endorsements", () => {
  const a = generateIdentity();
  const b = generateIdentity();
  const c = generateIdentity();

  it("leads from a pinned key to its successor and on through a chain", () => {
    const chain = [endorseKey(b, c.publicKey), endorseKey(a, b.publicKey)];
    expect(endorsedByPin(keyPin(a.publicKey), b.publicKey, chain)).toBe(true);
    expect(endorsedByPin(keyPin(a.publicKey), c.publicKey, chain)).toBe(true);
    expect(endorsedByPin(keyPin(b.publicKey), c.publicKey, chain)).toBe(true);
  });

  it("does not lead backwards, nor from a key outside the chain", () => {
    const chain = [endorseKey(a, b.publicKey)];
    expect(endorsedByPin(keyPin(b.publicKey), a.publicKey, chain)).toBe(false);
    expect(endorsedByPin(keyPin(c.publicKey), b.publicKey, chain)).toBe(false);
  });

  it("ignores a link whose signature does not verify", () => {
    const mallory = generateIdentity();
    const forged = { ...endorseKey(mallory, mallory.publicKey), oldKey: a.publicKey, newKey: mallory.publicKey };
    expect(endorsedByPin(keyPin(a.publicKey), mallory.publicKey, [forged])).toBe(false);
    const tampered = { ...endorseKey(a, b.publicKey), newKey: mallory.publicKey };
    expect(endorsedByPin(keyPin(a.publicKey), mallory.publicKey, [tampered])).toBe(false);
  });

  it("terminates on a cycle", () => {
    const cycle = [endorseKey(a, b.publicKey), endorseKey(b, a.publicKey)];
    expect(endorsedByPin(keyPin(a.publicKey), c.publicKey, cycle)).toBe(false);
  });
});
