import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import type { Logger } from "@flotilla/protocol/agent";
import type { LogCapture } from "./capture.ts";

const CURSOR_KEY = "journal";

interface JournalEntry {
  MESSAGE?: string | number[] | null;
  __CURSOR?: string;
  _SYSTEMD_UNIT?: string;
  UNIT?: string;
}

function messageText(m: JournalEntry["MESSAGE"]): string {
  if (typeof m === "string") return m;
  if (Array.isArray(m)) return Buffer.from(m).toString("utf8");
  return "";
}

/**
 * Follows systemd units through `journalctl --follow --output=json`. The journal cursor is stored
 * with the lines, so a restarted agent continues after the last stored entry; the first start
 * takes only entries written from then on. journalctl is restarted (with backoff) when it exits.
 */
export class JournalTail {
  private child: ChildProcess | undefined;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private failures = 0;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly capture: LogCapture,
    readonly units: string[],
    private readonly log: Logger,
    private readonly journalctl = "journalctl",
  ) {}

  start(): void {
    if (this.units.length === 0 || this.stopped) return;
    const cursor = this.capture.cursor(CURSOR_KEY);
    const args = ["--follow", "--output=json", "--no-pager", "--quiet", ...this.units.flatMap((u) => ["--unit", u])];
    args.push(cursor ? `--after-cursor=${cursor}` : "--lines=0");
    const child = spawn(this.journalctl, args, { stdio: ["ignore", "pipe", "pipe"] });
    this.child = child;
    let errText = "";
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (errText = (errText + d).slice(-500)));
    child.on("error", (err: NodeJS.ErrnoException) => {
      this.log.warn("cannot run journalctl; journal units are not captured", { err: err.message });
      if (err.code === "ENOENT") this.stopped = true;
    });
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (text) => {
      let e: JournalEntry;
      try {
        e = JSON.parse(text) as JournalEntry;
      } catch {
        return;
      }
      if (!e.__CURSOR) return;
      const unit = e._SYSTEMD_UNIT ?? e.UNIT ?? "journal";
      const cursor = e.__CURSOR;
      this.failures = 0;
      this.chain = this.chain
        .then(() => this.capture.appendWithCursor(unit, "journal", [messageText(e.MESSAGE)], CURSOR_KEY, cursor))
        .catch((err: unknown) => this.log.warn("cannot store journal line", { err: (err as Error).message }));
    });
    child.on("close", (code) => {
      this.child = undefined;
      if (this.stopped) return;
      const delay = Math.min(30_000, 1000 * 2 ** this.failures++);
      this.log.warn("journalctl exited; restarting", { code, err: errText.trim(), retryInMs: delay });
      this.retry = setTimeout(() => void this.chain.then(() => this.start()), delay);
    });
  }

  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    this.child?.kill("SIGTERM");
    await this.chain;
  }
}
