import { describe, expect, it } from "vitest";
import { fileLimitWarning, openFilesLimit } from "./file-limit.ts";

const limits = (soft: string, hard: string) => `Limit                     Soft Limit           Hard Limit           Units
Max processes             95530                95530                processes
Max open files            ${soft.padEnd(20)} ${hard.padEnd(20)} files
Max locked memory         8388608              8388608              bytes
`;

describe("open files limit", () => {
  it("reads the soft limit of /proc/self/limits", () => {
    expect(openFilesLimit(limits("20000", "20000"))).toBe(20_000);
    expect(openFilesLimit(limits("1024", "524288"))).toBe(1024);
    expect(openFilesLimit(limits("unlimited", "unlimited"))).toBeUndefined();
  });

  it("warns below 65,536 open files, naming how many devices fit, and stays silent above or without /proc", () => {
    expect(fileLimitWarning(() => limits("20000", "20000"))).toBe(
      "this process may open only 20000 files: every connected device holds one, so about 19000 devices can connect at once; raise the limit (systemd LimitNOFILE=, ulimit -n)",
    );
    expect(fileLimitWarning(() => limits("1048576", "1048576"))).toBeUndefined();
    expect(
      fileLimitWarning(() => {
        throw new Error("ENOENT");
      }),
    ).toBeUndefined();
  });
});
