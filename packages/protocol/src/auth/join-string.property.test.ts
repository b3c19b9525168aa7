import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { propertyRuns, propertyTimeout } from "../property-runs.ts";
import { encodeJoinString, parseJoinString, splitJoinSecret, type JoinString } from "./join-string.ts";

const RUNS = 300;
const runs = propertyRuns(RUNS);
const PREFIX = "flotilla-join-v1.";

const b64url = (min: number, max: number) => fc.string({ unit: fc.constantFrom(..."ABCXYZabcxyz0189_-"), minLength: min, maxLength: max });
const host = fc.oneof(fc.domain(), fc.ipV4(), fc.constant("[::1]"));
const url = fc
  .tuple(fc.constantFrom("http", "https"), host, fc.option(fc.integer({ min: 1, max: 65535 }), { nil: undefined }), fc.webPath())
  .map(([scheme, h, port, path]) => `${scheme}://${h}${port === undefined ? "" : `:${port}`}${path}`);
const join: fc.Arbitrary<JoinString> = fc.record({
  url,
  pin: b64url(43, 43),
  secret: fc.tuple(fc.string({ unit: fc.constantFrom(..."abz019"), minLength: 1, maxLength: 12 }), b64url(20, 100)).map(([id, s]) => `${id}.${s}`),
});

/** A join string whose JSON body is any value, or a field of any type. */
const damagedBody = fc.oneof(
  fc.jsonValue().map((v) => JSON.stringify(v)),
  fc.record({ u: fc.anything(), p: fc.anything(), s: fc.anything() }).map((v) => JSON.stringify(v) ?? "null"),
  fc.string(),
);

function parseOrError(text: string): JoinString | Error {
  try {
    return parseJoinString(text);
  } catch (err) {
    return err as Error;
  }
}

describe("join string properties", { timeout: propertyTimeout(60_000, RUNS) }, () => {
  it("reads back what encodeJoinString writes, trailing slashes of the address aside", () => {
    fc.assert(
      fc.property(join, fc.constantFrom("", " ", "\n", "\t "), (j, pad) => {
        const got = parseJoinString(pad + encodeJoinString(j) + pad);
        expect(got).toEqual({ ...j, url: j.url.replace(/\/+$/, "") });
        expect(parseJoinString(encodeJoinString(got))).toEqual(got);
        expect(splitJoinSecret(got.secret)?.tokenId).toBe(j.secret.split(".")[0]);
      }),
      runs,
    );
  });

  it("throws a one-line 'invalid join string' Error, never a crash, for any text or damaged body", () => {
    const text = fc.oneof(
      fc.string(),
      fc.string().map((s) => PREFIX + s),
      damagedBody.map((body) => PREFIX + Buffer.from(body).toString("base64url")),
      fc.tuple(join, fc.nat(), fc.string({ minLength: 1, maxLength: 3 })).map(([j, at, ins]) => {
        const s = encodeJoinString(j);
        const i = at % s.length;
        return s.slice(0, i) + ins + s.slice(i + 1);
      }),
    );
    fc.assert(
      fc.property(text, (t) => {
        const got = parseOrError(t);
        if (!(got instanceof Error)) {
          // Whatever parses must be a usable address, pin and secret that parse again the same.
          expect(["http:", "https:"]).toContain(new URL(got.url).protocol);
          expect(parseJoinString(encodeJoinString(got))).toEqual(got);
          return;
        }
        expect(got.constructor).toBe(Error);
        expect(got.message).toMatch(/^invalid join string: /);
        expect(got.message).not.toContain("\n");
      }),
      runs,
    );
  });

  it("refuses an address that is not http or https, and a malformed pin or secret", () => {
    fc.assert(
      fc.property(
        join,
        fc.constantFrom("ftp://a.example", "file:///etc/passwd", "javascript:alert(1)", "ws://a.example", "a.example:7700", ""),
        b64url(0, 60).filter((p) => p.length !== 43),
        fc.constantFrom("", "abc", "UPPER.aaaaaaaaaaaaaaaaaaaaaaa", "a.short", "a.aaaaaaaaaaaaaaaaaaaa!", "a..aaaaaaaaaaaaaaaaaaaaa"),
        (j, badUrl, badPin, badSecret) => {
          expect(() => parseJoinString(encodeJoinString({ ...j, url: badUrl }))).toThrow(/invalid join string: .*(address|http)/);
          expect(() => parseJoinString(encodeJoinString({ ...j, pin: badPin }))).toThrow(/invalid join string: bad key pin/);
          expect(() => parseJoinString(encodeJoinString({ ...j, secret: badSecret }))).toThrow(/invalid join string: bad secret/);
        },
      ),
      runs,
    );
  });
});
