import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { isNetworkError } from "./safety-net.ts";

const run = promisify(execFile);
const tsx = join(import.meta.dirname, "../../../node_modules/.bin/tsx");

/** Runs a script that installs the safety net and then throws `what` from a timer. */
async function crash(longRunning: boolean, what: string): Promise<{ code: number; stderr: string; stdout: string }> {
  const script = `
    import { installSafetyNet } from ${JSON.stringify(join(import.meta.dirname, "safety-net.ts"))};
    installSafetyNet(() => ${longRunning});
    setTimeout(() => { ${what} }, 10);
    setTimeout(() => { console.log("still running"); }, 300);
  `;
  try {
    const { stdout, stderr } = await run(tsx, ["--eval", script], { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("the process safety net", () => {
  it("tells a network error from any other", () => {
    expect(isNetworkError(new ConnectError("PING timed out", Code.Unavailable))).toBe(true);
    expect(isNetworkError(Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }))).toBe(true);
    expect(isNetworkError(Object.assign(new Error("x"), { code: "ERR_HTTP2_STREAM_ERROR" }))).toBe(true);
    expect(isNetworkError(new TypeError("undefined is not a function"))).toBe(false);
  });

  it("keeps a long-running role alive after an uncaught network error, saying it is a bug", async () => {
    const r = await crash(true, `const e = new Error("read ECONNRESET"); e.code = "ECONNRESET"; throw e;`);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("still running");
    expect(r.stderr).toMatch(/error uncaught exception \(a bug in flotilla; please report it\), carrying on: Error: read ECONNRESET/);
  }, 30_000);

  it("ends the process with 70 on any other uncaught error or unhandled rejection", async () => {
    const thrown = await crash(true, `throw new TypeError("boom");`);
    expect(thrown.code).toBe(70);
    expect(thrown.stdout).not.toContain("still running");
    expect(thrown.stderr).toMatch(/error uncaught exception \(a bug in flotilla; please report it\): TypeError: boom/);
    const rejected = await crash(true, `void Promise.reject(new RangeError("nope"));`);
    expect(rejected.code).toBe(70);
    expect(rejected.stderr).toMatch(/unhandled rejection .*RangeError: nope/);
  }, 30_000);

  it("ends a short command quietly when the reader of its output goes away (| head)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "flotilla-epipe-"));
    const file = join(dir, "writer.ts");
    await writeFile(
      file,
      [
        `import { installSafetyNet } from ${JSON.stringify(join(import.meta.dirname, "safety-net.ts"))};`,
        "installSafetyNet(() => false);",
        'const line = "x".repeat(1000) + "\\n";',
        'const pump = () => { while (process.stdout.write(line)) {} process.stdout.once("drain", pump); };',
        "pump();",
      ].join("\n"),
    );
    try {
      // head closes the pipe after 10 bytes; pipefail makes the writer's exit code the pipeline's.
      const { stdout, stderr } = await run("bash", ["-o", "pipefail", "-c", `${tsx} ${file} | head -c 10`], { timeout: 20_000 });
      expect(stdout).toBe("xxxxxxxxxx");
      expect(stderr).toBe("");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it("ends a short command on any uncaught error, network or not", async () => {
    const r = await crash(false, `const e = new Error("read ECONNRESET"); e.code = "ECONNRESET"; throw e;`);
    expect(r.code).toBe(70);
  }, 30_000);
});
