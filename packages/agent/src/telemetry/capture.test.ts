import { appendFile, mkdtemp, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { agentv1, silentLogger } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { capturingLogger, LogCapture } from "./capture.ts";
import { FileTail } from "./file-tail.ts";
import { SegmentBuffer } from "./segment-buffer.ts";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "flotilla-capture-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function stored(b: SegmentBuffer): Promise<string[]> {
  return (await b.read(0, 100_000, 1 << 30)).map((r) => {
    const rec = fromBinary(agentv1.LogRecordSchema, r.body);
    return `${rec.unit}/${rec.source}: ${rec.line}`;
  });
}

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("LogCapture", () => {
  it("stores appended lines in order, cuts overlong ones and renames an invalid unit", async () => {
    const b = await SegmentBuffer.open(join(dir, "buf"), { maxBytes: 1 << 20 });
    const c = new LogCapture(b);
    c.append("webapp", "stdout", "one\n");
    c.append("webapp", "stderr", "two");
    c.append("../etc", "stdout", "three");
    c.append("webapp", "stdout", "x".repeat(20_000));
    await c.flush();
    const lines = await stored(b);
    expect(lines.slice(0, 3)).toEqual(["webapp/stdout: one", "webapp/stderr: two", "invalid-unit/stdout: three"]);
    expect(lines[3]!.length).toBeLessThan(16 * 1024 + 20);
    expect(lines[3]!.endsWith("…")).toBe(true);
    await b.close();
  });

  it("captures the agent's own log lines into the flotilla-agent unit", async () => {
    const b = await SegmentBuffer.open(join(dir, "buf"), { maxBytes: 1 << 20 });
    const c = new LogCapture(b);
    capturingLogger(silentLogger, c).child({ device: "d1" }).warn("coordinator unreachable", { retryInMs: 500 });
    await c.flush();
    expect(await stored(b)).toEqual(["flotilla-agent/stderr: warn coordinator unreachable device=d1 retryInMs=500"]);
    await b.close();
  });
});

describe("FileTail", () => {
  it("follows a file through rotation and truncation, and resumes after a restart without repeating a line", async () => {
    const path = join(dir, "app.log");
    await writeFile(path, "a1\na2\npartial");
    let b = await SegmentBuffer.open(join(dir, "buf"), { maxBytes: 1 << 20 });
    let tail = new FileTail(new LogCapture(b), "app", path, silentLogger, 20);
    tail.start();
    await until("two lines", async () => (await stored(b)).length === 2);
    await appendFile(path, " line\n");
    await until("the completed line", async () => (await stored(b)).length === 3);
    await tail.close();
    await b.close();

    await appendFile(path, "a4\n");
    b = await SegmentBuffer.open(join(dir, "buf"), { maxBytes: 1 << 20 });
    tail = new FileTail(new LogCapture(b), "app", path, silentLogger, 20);
    tail.start();
    await until("the line written while stopped", async () => (await stored(b)).length === 4);
    await rename(path, `${path}.1`);
    await writeFile(path, "b1\nb2\n");
    await until("the rotated file's lines", async () => (await stored(b)).length === 6);
    await writeFile(path, "c1\n");
    await until("the line after truncation", async () => (await stored(b)).length === 7);
    await tail.close();
    expect(await stored(b)).toEqual(["app/file: a1", "app/file: a2", "app/file: partial line", "app/file: a4", "app/file: b1", "app/file: b2", "app/file: c1"]);
    await b.close();
  });
});
