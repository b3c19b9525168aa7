import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "@flotilla/protocol/testing";
import { formatNarInfo, formatSha256, fromNixBase32, MAX_NAR_SIZE, parseNarInfo, parseSha256, toNixBase32, type NarInfo } from "./nix-format.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);

const BASE32 = [..."0123456789abcdfghijklmnpqrsvwxyz"];
const hashPart = fc.string({ unit: fc.constantFrom(...BASE32), minLength: 32, maxLength: 32 });
const pathName = fc.string({ unit: fc.constantFrom(..."az09+-._?="), minLength: 1, maxLength: 40 });
const baseName = fc.tuple(hashPart, pathName).map(([h, n]) => `${h}-${n}`);
const hex = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex"));
const size = fc.integer({ min: 0, max: MAX_NAR_SIZE });

const narInfo: fc.Arbitrary<NarInfo> = fc.record({
  storePath: baseName.map((b) => `/nix/store/${b}`),
  url: fc
    .tuple(fc.string({ unit: fc.constantFrom(...BASE32), minLength: 1, maxLength: 52 }), fc.constantFrom("", ".xz", ".zst", ".bz2"))
    .map(([h, ext]) => `nar/${h}.nar${ext}`),
  compression: fc.constantFrom("none", "xz", "zstd", "bzip2"),
  fileHash: hex,
  fileSize: size,
  narHash: hex,
  narSize: size,
  references: fc.uniqueArray(baseName, { maxLength: 6 }).map((r) => r.sort()),
  deriver: fc.oneof(fc.constant(""), fc.tuple(hashPart, pathName).map(([h, n]) => `${h}-${n}.drv`)),
  sigs: fc.array(
    fc.tuple(fc.stringMatching(/^[a-z0-9.-]{1,20}-[0-9]$/), fc.uint8Array({ minLength: 64, maxLength: 64 })).map(([n, sig]) => `${n}:${Buffer.from(sig).toString("base64")}`),
    { maxLength: 3 },
  ),
  ca: fc.oneof(fc.constant(""), fc.string({ unit: fc.constantFrom(..."fixed:r:sha256:abc0123"), minLength: 1, maxLength: 60 })),
});

/** A narinfo as text with lines dropped, repeated, swapped or damaged: what a bad cache may serve. */
const damagedText = fc.tuple(narInfo, fc.array(fc.tuple(fc.nat(), fc.nat(), fc.string({ maxLength: 8 }), fc.constantFrom("drop", "dup", "cut", "insert", "crlf")), { maxLength: 4 })).map(([info, edits]) => {
  const lines = formatNarInfo(info).split("\n");
  for (const [at, pos, text, kind] of edits) {
    const i = at % lines.length;
    const line = lines[i]!;
    if (kind === "drop") lines.splice(i, 1);
    else if (kind === "dup") lines.splice(i, 0, line);
    else if (kind === "cut") lines[i] = line.slice(0, pos % (line.length + 1));
    else if (kind === "insert") lines[i] = line.slice(0, pos % (line.length + 1)) + text + line.slice(pos % (line.length + 1));
    else lines[i] = `${line}\r`;
  }
  return lines.join("\n");
});

function plainErrorOrResult(text: string): NarInfo | Error {
  try {
    return parseNarInfo(text);
  } catch (err) {
    return err as Error;
  }
}

describe("narinfo properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("reads back every narinfo formatNarInfo writes", () => {
    fc.assert(
      fc.property(narInfo, (info) => {
        expect(parseNarInfo(formatNarInfo(info))).toEqual(info);
      }),
      runs,
    );
  });

  it("answers any text, or a damaged narinfo, with a parsed narinfo or a plain Error, never a crash", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), damagedText), (text) => {
        const got = plainErrorOrResult(text);
        if (got instanceof Error) {
          expect(got.constructor).toBe(Error);
          return;
        }
        // Whatever it accepts, it checked: sizes in range, a store path, and it reads back the same.
        expect(got.narSize).toBeLessThanOrEqual(MAX_NAR_SIZE);
        expect(got.fileSize).toBeLessThanOrEqual(MAX_NAR_SIZE);
        expect(got.storePath).toMatch(/^\/nix\/store\/[0-9a-z]{32}-/);
        expect(parseNarInfo(formatNarInfo(got))).toEqual(got);
      }),
      runs,
    );
  });

  it("refuses sizes above the limit or not a plain number", () => {
    fc.assert(
      fc.property(narInfo, fc.oneof(fc.bigInt({ min: BigInt(MAX_NAR_SIZE) + 1n, max: 10n ** 30n }).map(String), fc.constantFrom("-1", "1e3", "0x10", " 1", "1.5", "", "Infinity", "NaN")), (info, bad) => {
        const text = formatNarInfo(info).replace(/^NarSize: .*$/m, `NarSize: ${bad}`);
        expect(() => parseNarInfo(text)).toThrow(/NarSize is (too large|missing or not a number)/);
      }),
      runs,
    );
  });

  it("round-trips sha256 digests through nix-base32, hex and SRI, and refuses anything else with an Error", () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), (bytes) => {
        const h = Buffer.from(bytes).toString("hex");
        expect(Buffer.from(fromNixBase32(toNixBase32(bytes), 32))).toEqual(Buffer.from(bytes));
        expect(parseSha256(formatSha256(h))).toBe(h);
        expect(parseSha256(`sha256:${h}`)).toBe(h);
        expect(parseSha256(`sha256-${Buffer.from(bytes).toString("base64")}`)).toBe(h);
      }),
      runs,
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: fc.constantFrom(...BASE32, "A", "e"), minLength: 50, maxLength: 54 }).map((s) => `sha256:${s}`)), (text) => {
        try {
          expect(parseSha256(text)).toMatch(/^[0-9a-f]{64}$/);
        } catch (err) {
          expect((err as Error).constructor).toBe(Error);
        }
      }),
      runs,
    );
  });
});
