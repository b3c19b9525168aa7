import { spawn } from "node:child_process";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Proc, waitFor } from "@flotilla/protocol/testing";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { Outbox, type OutboxRecord } from "./outbox.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const summary = (records: OutboxRecord[]) => records.map((r) => `${r.stream}:${r.seq}:${dec(r.body)}`);

const tmp = useTempDir("flotilla-outbox-");
let dir: string;
const opened: Outbox[] = [];

async function openBox(): Promise<Outbox> {
  const box = await Outbox.open(dir);
  opened.push(box);
  return box;
}

beforeEach(() => {
  dir = join(tmp.path, "outbox");
});

afterEach(async () => {
  for (const box of opened.splice(0)) await box.close();
});

describe("Outbox", () => {
  it("creates its directory readable only by its owner", async () => {
    await openBox();
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
  });

  it("hands out seqs per stream and returns records oldest first across streams", async () => {
    const box = await openBox();
    const first = await box.append("facts", enc("f1"));
    expect(first).toMatchObject({ stream: "facts", seq: 1 });
    expect(Math.abs(first.time - Date.now())).toBeLessThan(5000);
    await box.append("logs", enc("l1"));
    await box.append("facts", enc("f2"));
    await box.append("logs", enc("l2"));
    expect(box.size()).toBe(4);
    expect(summary(await box.pending(10))).toEqual(["facts:1:f1", "logs:1:l1", "facts:2:f2", "logs:2:l2"]);
    expect(summary(await box.pending(2))).toEqual(["facts:1:f1", "logs:1:l1"]);
  });

  it("deletes a stream's records up to the acknowledged seq and leaves other streams alone", async () => {
    const box = await openBox();
    for (const s of ["a1", "a2", "a3"]) await box.append("a", enc(s));
    await box.append("b", enc("b1"));
    await box.ack("a", 2);
    expect(summary(await box.pending(10))).toEqual(["a:3:a3", "b:1:b1"]);
    expect(box.size()).toBe(2);
    await box.ack("a", 2);
    await box.ack("b", 1);
    await box.ack("a", 3);
    expect(await box.pending(10)).toEqual([]);
    expect(box.size()).toBe(0);
    expect((await readdir(dir)).filter((n) => n.endsWith(".rec"))).toEqual([]);
  });

  it("stops a batch before maxBytes but always returns at least one record", async () => {
    const box = await openBox();
    await box.append("s", new Uint8Array(600));
    await box.append("s", new Uint8Array(300));
    await box.append("s", new Uint8Array(300));
    expect((await box.pending(10, 500)).map((r) => r.seq)).toEqual([1]);
    await box.ack("s", 1);
    expect((await box.pending(10, 600)).map((r) => r.seq)).toEqual([2, 3]);
    expect((await box.pending(10, 599)).map((r) => r.seq)).toEqual([2]);
  });

  it("keeps records and their order across a reopen", async () => {
    const box = await openBox();
    await box.append("x", enc("x1"));
    await box.append("y", enc("y1"));
    await box.append("x", enc("x2"));
    await box.close();
    const again = await openBox();
    expect(again.size()).toBe(3);
    expect(summary(await again.pending(10))).toEqual(["x:1:x1", "y:1:y1", "x:2:x2"]);
    expect(await again.append("y", enc("y2"))).toMatchObject({ seq: 2 });
  });

  it("keeps seqs growing after everything was acknowledged and the outbox reopened", async () => {
    const box = await openBox();
    await box.append("facts", enc("1"));
    await box.append("facts", enc("2"));
    await box.ack("facts", 2);
    expect((await box.append("facts", enc("3"))).seq).toBe(3);
    await box.ack("facts", 3);
    await box.close();
    const again = await openBox();
    expect(again.size()).toBe(0);
    expect((await again.append("facts", enc("4"))).seq).toBe(4);
    expect((await again.append("other", enc("1"))).seq).toBe(1);
  });

  it("raises a stream's seq to an acknowledgement beyond the last one handed out", async () => {
    const box = await openBox();
    await box.append("logs", enc("1"));
    await box.ack("logs", 41);
    expect((await box.append("logs", enc("x"))).seq).toBe(42);
    await box.ack("logs", 42);
    await box.close();
    expect((await (await openBox()).append("logs", enc("y"))).seq).toBe(43);
  });

  it("ignores and removes a leftover temporary file", async () => {
    const box = await openBox();
    await box.append("facts", enc("kept"));
    await box.close();
    await writeFile(join(dir, "facts-00000000000000000002.rec.tmp"), "half a rec");
    await writeFile(join(dir, "facts.seq.tmp"), "99");
    const again = await openBox();
    expect(summary(await again.pending(10))).toEqual(["facts:1:kept"]);
    expect(again.corrupted).toBe(0);
    expect((await again.append("facts", enc("next"))).seq).toBe(2);
    expect((await readdir(dir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  it("drops a record whose checksum fails at open and counts it", async () => {
    const box = await openBox();
    for (const s of ["one", "two", "three"]) await box.append("s", enc(s));
    await box.close();
    const victim = join(dir, "s-00000000000000000002.rec");
    const data = await readFile(victim);
    data.writeUInt8(data.readUInt8(data.length - 1) ^ 0xff, data.length - 1);
    await writeFile(victim, data);
    await writeFile(join(dir, "s-00000000000000000009.rec"), "garbage");
    const again = await openBox();
    expect(again.corrupted).toBe(2);
    expect(summary(await again.pending(10))).toEqual(["s:1:one", "s:3:three"]);
    expect((await readdir(dir)).sort()).toEqual(["s-00000000000000000001.rec", "s-00000000000000000003.rec"]);
    expect((await again.append("s", enc("four"))).seq).toBe(4);
  });

  it("does not take a record renamed to another seq", async () => {
    const box = await openBox();
    await box.append("s", enc("one"));
    await box.close();
    await writeFile(join(dir, "s-00000000000000000005.rec"), await readFile(join(dir, "s-00000000000000000001.rec")));
    const again = await openBox();
    expect(again.corrupted).toBe(1);
    expect(summary(await again.pending(10))).toEqual(["s:1:one"]);
  });

  it("refuses stream names outside [a-z0-9_-]{1,64}", async () => {
    const box = await openBox();
    for (const bad of ["", "Facts", "a/b", "a.b", "x".repeat(65), "../x"]) {
      await expect(box.append(bad, enc("x"))).rejects.toThrow(/stream name/);
      await expect(box.ack(bad, 1)).rejects.toThrow(/stream name/);
    }
    expect((await box.append("a-b_c-9", enc("x"))).seq).toBe(1);
    expect(await readdir(dir)).toEqual(["a-b_c-9-00000000000000000001.rec"]);
  });

  it("assigns distinct contiguous seqs to concurrent appends", async () => {
    const box = await openBox();
    const records = await Promise.all(Array.from({ length: 20 }, (_, i) => box.append("c", enc(String(i)))));
    expect(records.map((r) => r.seq).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    expect((await box.pending(100)).map((r) => r.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it("tells listeners about each durable append until they unsubscribe", async () => {
    const box = await openBox();
    let calls = 0;
    const off = box.onAppend(() => {
      calls++;
      expect(box.size()).toBe(calls);
    });
    await box.append("s", enc("1"));
    await box.append("s", enc("2"));
    off();
    await box.append("s", enc("3"));
    expect(calls).toBe(2);
  });

  it("rejects use after close", async () => {
    const box = await openBox();
    await box.close();
    await expect(box.append("s", enc("x"))).rejects.toThrow(/closed/);
    await expect(box.pending(1)).rejects.toThrow(/closed/);
  });

  it("survives SIGKILL in a tight append loop with contiguous, intact records", async () => {
    const outboxModule = fileURLToPath(new URL("./outbox.ts", import.meta.url));
    const repoRoot = fileURLToPath(new URL("../../../../", import.meta.url));
    const script = join(tmp.path, "append-loop.mts");
    await writeFile(
      script,
      `import { Outbox } from ${JSON.stringify(outboxModule)};
const box = await Outbox.open(${JSON.stringify(dir)});
for (let i = 1; ; i++) {
  const stream = i % 3 === 0 ? "logs" : "facts";
  const rec = await box.append(stream, new TextEncoder().encode("body-" + stream + "-" + "x".repeat(i % 50)));
  process.stdout.write(stream + " " + rec.seq + "\\n");
}
`,
    );
    const child = new Proc(spawn(process.execPath, ["--import", "tsx", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] }), "append loop");
    try {
      await waitFor(
        "the append loop to confirm 200 records",
        () => {
          if (child.exitCode !== null) throw new Error(`append loop exited early: ${child.stderr}`);
          return child.stdout.split("\n").length >= 200;
        },
        30_000,
        10,
      );
    } finally {
      await child.stop("SIGKILL");
    }
    const out = child.stdout;

    // Everything the child saw resolve must be there: appends are durable when they resolve.
    const confirmed = new Map<string, number>();
    for (const line of out.split("\n")) {
      const [stream, seq] = line.split(" ");
      if (stream && seq) confirmed.set(stream, Math.max(confirmed.get(stream) ?? 0, Number(seq)));
    }
    const box = await openBox();
    expect(box.corrupted).toBe(0);
    const records = await box.pending(Number.MAX_SAFE_INTEGER);
    expect(records.length).toBe(box.size());
    for (const stream of ["facts", "logs"]) {
      const mine = records.filter((r) => r.stream === stream);
      expect(mine.map((r) => r.seq)).toEqual(Array.from({ length: mine.length }, (_, i) => i + 1));
      expect(mine.length).toBeGreaterThanOrEqual(confirmed.get(stream) ?? 0);
      for (const r of mine) expect(dec(r.body)).toMatch(new RegExp(`^body-${stream}-x*$`));
    }
    expect((await readdir(dir)).filter((n) => n.endsWith(".tmp"))).toEqual([]);
    const next = await box.append("facts", enc("after"));
    expect(next.seq).toBe(records.filter((r) => r.stream === "facts").length + 1);
  });
});
