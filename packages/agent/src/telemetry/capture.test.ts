import { appendFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { agentv1, silentLogger } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { describe, expect, it } from "vitest";
import { capturingLogger, LogCapture } from "./capture.ts";
import { FileTail } from "./file-tail.ts";
import { SegmentBuffer } from "./segment-buffer.ts";

const dir = useTempDir("flotilla-capture-");

async function stored(b: SegmentBuffer): Promise<string[]> {
  return (await b.read(0, 100_000, 1 << 30)).map((r) => {
    const rec = fromBinary(agentv1.LogRecordSchema, r.body);
    return `${rec.unit}/${rec.source}: ${rec.line}`;
  });
}

describe("LogCapture", () => {
  it("stores appended lines in order, cuts overlong ones and renames an invalid unit", async () => {
    const b = await SegmentBuffer.open(join(dir.path, "buf"), { maxBytes: 1 << 20 });
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
    const b = await SegmentBuffer.open(join(dir.path, "buf"), { maxBytes: 1 << 20 });
    const c = new LogCapture(b);
    capturingLogger(silentLogger, c).child({ device: "d1" }).warn("coordinator unreachable", { retryInMs: 500 });
    await c.flush();
    expect(await stored(b)).toEqual(["flotilla-agent/stderr: warn coordinator unreachable device=d1 retryInMs=500"]);
    await b.close();
  });
});

describe("FileTail", () => {
  it("follows a file through rotation and truncation, and resumes after a restart without repeating a line", async () => {
    const path = join(dir.path, "app.log");
    await writeFile(path, "a1\na2\npartial");
    let b = await SegmentBuffer.open(join(dir.path, "buf"), { maxBytes: 1 << 20 });
    let tail = new FileTail(new LogCapture(b), "app", path, silentLogger, 20);
    tail.start();
    await waitFor("two lines", async () => (await stored(b)).length === 2, 10_000, 20);
    await appendFile(path, " line\n");
    await waitFor("the completed line", async () => (await stored(b)).length === 3, 10_000, 20);
    await tail.close();
    await b.close();

    await appendFile(path, "a4\n");
    b = await SegmentBuffer.open(join(dir.path, "buf"), { maxBytes: 1 << 20 });
    tail = new FileTail(new LogCapture(b), "app", path, silentLogger, 20);
    tail.start();
    await waitFor("the line written while stopped", async () => (await stored(b)).length === 4, 10_000, 20);
    await rename(path, `${path}.1`);
    await writeFile(path, "b1\nb2\n");
    await waitFor("the rotated file's lines", async () => (await stored(b)).length === 6, 10_000, 20);
    await writeFile(path, "c1\n");
    await waitFor("the line after truncation", async () => (await stored(b)).length === 7, 10_000, 20);
    await tail.close();
    expect(await stored(b)).toEqual(["app/file: a1", "app/file: a2", "app/file: partial line", "app/file: a4", "app/file: b1", "app/file: b2", "app/file: c1"]);
    await b.close();
  });
});
