import { watch, type FSWatcher } from "node:fs";
import { open, stat } from "node:fs/promises";
import type { Logger } from "@flotilla/protocol/agent";
import type { LogCapture } from "./capture.ts";

const CHUNK = 1 << 20;

/**
 * Follows a log file an application writes (`--log-file-unit NAME=PATH`) into a unit. The
 * position (inode and offset) is stored with the lines in the buffer, so after a crash or
 * restart the tail resumes exactly where the last stored line ended. A file that is replaced
 * (rotated: another inode) or truncated (noticed when it is shorter than the position, as with
 * `tail -F`) is read again from its start. A last line without its line break waits until the
 * break is written.
 */
export class FileTail {
  private watcher: FSWatcher | undefined;
  private wake: (() => void) | undefined;
  private readonly stop = new AbortController();
  private done: Promise<void> | undefined;

  constructor(
    private readonly capture: LogCapture,
    readonly unit: string,
    readonly path: string,
    private readonly log: Logger,
    private readonly pollMs = 250,
  ) {}

  private get key(): string {
    return `file:${this.unit}`;
  }

  start(): void {
    this.done = this.run();
  }

  async close(): Promise<void> {
    this.stop.abort();
    this.wake?.();
    this.watcher?.close();
    await this.done;
  }

  private async run(): Promise<void> {
    let warned = false;
    while (!this.stop.signal.aborted) {
      let more = false;
      try {
        more = await this.readOnce();
        warned = false;
        if (!this.watcher) this.watcher = watch(this.path, () => this.wake?.()).on("error", () => (this.watcher = undefined));
      } catch (err) {
        if (!warned) this.log.warn("cannot read log file", { unit: this.unit, path: this.path, err: (err as Error).message });
        warned = true;
        this.watcher?.close();
        this.watcher = undefined;
      }
      if (!more) await this.idle();
    }
  }

  private idle(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, this.pollMs);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  /** Reads what was appended since the cursor; returns true when there may be more. */
  private async readOnce(): Promise<boolean> {
    const st = await stat(this.path);
    const [inoText = "", offText = "0"] = (this.capture.cursor(this.key) ?? "").split(":");
    let offset = inoText === String(st.ino) ? Number(offText) : 0;
    if (st.size < offset) offset = 0;
    if (st.size === offset) return false;
    const fh = await open(this.path, "r");
    let buf: Buffer;
    try {
      buf = Buffer.allocUnsafe(Math.min(CHUNK, st.size - offset));
      const { bytesRead } = await fh.read(buf, 0, buf.length, offset);
      buf = buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
    let end = buf.lastIndexOf(0x0a) + 1;
    // A line longer than a whole chunk is taken as it is rather than waited for forever.
    if (end === 0 && buf.length === CHUNK) end = buf.length;
    if (end === 0) {
      // No complete line yet; still record the inode so a rotation is noticed.
      if (inoText !== String(st.ino)) await this.capture.appendWithCursor(this.unit, "file", [], this.key, `${st.ino}:${offset}`);
      return false;
    }
    const lines = buf.subarray(0, end).toString("utf8").split("\n");
    if (lines.at(-1) === "") lines.pop();
    await this.capture.appendWithCursor(this.unit, "file", lines.map((l) => (l.endsWith("\r") ? l.slice(0, -1) : l)), this.key, `${st.ino}:${offset + end}`);
    return offset + end < st.size;
  }
}
