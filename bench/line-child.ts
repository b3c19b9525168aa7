/**
 * A benchmark's helper script run in a process of its own (through tsx), spoken to in lines: a
 * JSON job on its standard input, a line of answer on its standard output. Ending its input
 * stops it. The benchmarks use it for the side that in production is another process (the
 * coordinator for log shipping, an agent for downloads), so that side's CPU time and garbage
 * are its own.
 */
import { spawn, type ChildProcessByStdio } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";

export class LineChild {
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private readonly lines: string[] = [];
  private waiting: ((line: string | undefined) => void) | undefined;
  private exited = false;

  /** Runs `bench/<script>` with `args`, node given `nodeFlags` first. */
  constructor(
    private readonly script: string,
    args: string[] = [],
    nodeFlags: string[] = [],
  ) {
    const argv = [...nodeFlags, "--import", import.meta.resolve("tsx"), join(import.meta.dirname, script), ...args];
    this.child = spawn(process.execPath, argv, { stdio: ["pipe", "pipe", "inherit"] });
    this.child.stdin.on("error", () => {}); // a process that died: its exit says so
    createInterface({ input: this.child.stdout }).on("line", (line) => {
      if (this.waiting) this.waiting(line);
      else this.lines.push(line);
    });
    this.child.once("exit", () => {
      this.exited = true;
      this.waiting?.(undefined);
    });
  }

  /** The next line it printed; throws once it exited without one. */
  async next(): Promise<string> {
    const line = this.lines.shift() ?? (this.exited ? undefined : await new Promise<string | undefined>((r) => (this.waiting = r)));
    this.waiting = undefined;
    if (line === undefined) throw new Error(`the benchmark's ${this.script} process exited`);
    return line;
  }

  /** Sends one job as a JSON line. */
  send(job: unknown): void {
    this.child.stdin.write(`${JSON.stringify(job)}\n`);
  }

  async close(): Promise<void> {
    if (this.exited) return;
    this.child.stdin.end();
    await once(this.child, "exit");
  }
}
