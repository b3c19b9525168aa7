import { describe, expect, it } from "vitest";
import { formatBytes, orgQuotasSchema, parseByteSize, quotaSchema } from "./byte-size.ts";

describe("sizes", () => {
  it("reads bytes, decimal and binary units, in any case, with or without a space", () => {
    expect(parseByteSize("1048576")).toBe(1048576);
    expect(parseByteSize("20GiB")).toBe(20 * 1024 ** 3);
    expect(parseByteSize("500 MB")).toBe(500e6);
    expect(parseByteSize("1.5kib")).toBe(1536);
    expect(parseByteSize("2TB")).toBe(2e12);
    for (const bad of ["", "GiB", "-1", "1.5", "10 XB", "1e9", "20 GiBs"]) expect(() => parseByteSize(bad), bad).toThrow(/expected a size such as 20GiB/);
  });

  it("writes sizes in binary units with at most one decimal", () => {
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(700 * 1024)).toBe("700 KiB");
    expect(formatBytes(1.25 * 1024 ** 3)).toBe("1.3 GiB");
    expect(formatBytes(20 * 1024 ** 3)).toBe("20 GiB");
  });

  it("takes a quota as a size, a number of bytes, 0 or unlimited, and loads back what it printed", () => {
    const q = quotaSchema();
    expect(q.parse("20GiB")).toBe(20 * 1024 ** 3);
    expect(q.parse(q.parse("20GiB"))).toBe(20 * 1024 ** 3);
    expect(q.parse("unlimited")).toBe(0);
    expect(q.parse(0)).toBe(0);
    expect(q.safeParse(-1).success).toBe(false);
    expect(q.safeParse(1.5).success).toBe(false);
    expect(q.safeParse("lots").success).toBe(false);

    const orgs = orgQuotasSchema();
    const parsed = orgs.parse("acme=100GiB, globex=unlimited");
    expect(parsed).toEqual({ acme: 100 * 1024 ** 3, globex: 0 });
    expect(orgs.parse(parsed)).toEqual(parsed);
    expect(orgs.parse({ acme: "1TiB" })).toEqual({ acme: 1024 ** 4 });
    expect(orgs.parse("")).toEqual({});
    expect(orgs.safeParse("acme").error?.issues[0]?.message).toBe('expected organization=size, not "acme"');
    expect(orgs.safeParse("acme=lots").error?.issues[0]?.message).toMatch(/^acme: expected a size/);
  });
});
