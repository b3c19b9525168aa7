/**
 * `flotilla rollout watch` on a real terminal: the CLI runs on a pseudo-terminal (util-linux
 * `script`), against a real coordinator and a swarm of devices speaking the real agent protocol,
 * and the test reads back exactly the bytes the terminal received. It checks that the watch
 * redraws its block in place (cursor up over the previous frame, clear to the end of the screen),
 * that every frame fits the terminal (no line wraps, the block never outgrows the screen), that
 * the frames in between show the rollout progressing, and what a terminal would show at the end.
 */
import { spawn } from "node:child_process";
import { Proc, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { type Fleet } from "./support/fleet.ts";
import { flotillaBin, repoRoot } from "./support/sandbox.ts";
import { signedFleet } from "./support/releases.ts";
import { hosts, publish, start, swarmOf } from "./support/rollouts.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const BAR_WIDTH = 30;

/** The size of a pseudo-terminal. */
interface Term {
  cols: number;
  rows: number;
}

const sb = useSandbox();

/** Quotes one argument for /bin/sh. */
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs `flotilla <args>` as `fleet.admin` does (same program, --coordinator, FLOTILLA_HOME), but on
 * a pseudo-terminal of `term.cols` x `term.rows`. The returned Proc's stdout is the raw terminal
 * output.
 */
function adminOnPty(fleet: Fleet, term: Term, args: string[]): Proc {
  const cmd = [process.execPath, flotillaBin, "--coordinator", fleet.url, ...args].map(shq).join(" ");
  const child = spawn("script", ["-q", "-e", "-E", "never", "-c", `stty cols ${term.cols} rows ${term.rows} && exec ${cmd}`, "/dev/null"], {
    cwd: repoRoot,
    env: { ...process.env, FLOTILLA_HOME: fleet.adminHome, TERM: "xterm-256color", COLUMNS: String(term.cols), LINES: String(term.rows), SHELL: "/bin/sh" },
    // stdin stays an open pipe nobody writes to: `script` never sees an end of input.
    stdio: ["pipe", "pipe", "pipe"],
  });
  return sb.adopt(child, `flotilla ${args.slice(0, 2).join(" ")} (pty ${term.cols}x${term.rows})`);
}

/** One redraw of the watch block, split at the cursor-up-and-clear sequences. */
interface Frame {
  /** The n of the `\x1b[<n>A\x1b[J` that started this frame (0 for the first). */
  up: number;
  lines: string[];
}

const REDRAW = /\x1b\[(\d+)A\x1b\[J/;

/** Splits raw terminal output (CRLF, as a pty sends it) into frames. */
function frames(raw: string): Frame[] {
  const parts = raw.replace(/\r\n/g, "\n").split(REDRAW);
  const out: Frame[] = [{ up: 0, lines: parts[0]!.split("\n") }];
  for (let i = 1; i < parts.length; i += 2) out.push({ up: Number(parts[i]), lines: parts[i + 1]!.split("\n") });
  // Each frame ends with a newline; the text after it is the start of the next (always empty here).
  for (const f of out) if (f.lines.at(-1) === "") f.lines.pop();
  return out;
}

interface WaveLine {
  line: string;
  mark: string;
  number: number;
  entry: string;
  bar: string;
  healthy: number;
  total: number;
  rest: string;
}

const WAVE_LINE = /^([ >~]) wave (\d+) +(\S+) \[([#x-]+)\] (\d+)\/(\d+) healthy(.*)$/;

function waveLinesOf(f: Frame): WaveLine[] {
  return f.lines.flatMap((l) => {
    const m = WAVE_LINE.exec(l);
    return m ? [{ line: l, mark: m[1]!, number: Number(m[2]), entry: m[3]!, bar: m[4]!, healthy: Number(m[5]), total: Number(m[6]), rest: m[7]! }] : [];
  });
}

/** The bar `rollout watch` draws for a wave: healthy (and skipped) as #, failed as x. */
function barOf(healthy: number, failed: number, total: number): string {
  const ok = Math.round((healthy / total) * BAR_WIDTH);
  const bad = Math.min(BAR_WIDTH - ok, Math.round((failed / total) * BAR_WIDTH));
  return "#".repeat(ok) + "x".repeat(bad) + "-".repeat(BAR_WIDTH - ok - bad);
}

/** The busy-device lines of a frame: `    <name padded to 24> wave <n>  <state>`. */
const BUSY_LINE = /^ {4}(\S+) +wave (\d+) {2}(.+)$/;
/** The states of devices installing now, the only ones listed below the bars. */
const BUSY_STATE = /^(notified|downloading( \d+%)?|verifying|activating|health-checking|rolling-back(: .*)?)$/;
/** The line that counts the busy devices a frame has no room for. */
const MORE_LINE = /^ {4}\+(\d+) more installing$/;

/**
 * What a terminal of `term` shows after receiving `raw`, scrollback included: printable text with
 * auto-wrap, CR, LF, cursor up (ESC [n A, never above the top of the screen) and erase below
 * (ESC [J). The output starts on the bottom row of a full screen, as after a few commands: then
 * every line written scrolls the screen, the least room a redraw can have to move up. Any other
 * control sequence fails the test rather than being misread.
 */
function screen(raw: string, term: Term): string[] {
  const lines: string[][] = Array.from({ length: term.rows }, () => []);
  let top = 0;
  let row = term.rows - 1;
  let col = 0;
  const newline = () => {
    row++;
    if (row === lines.length) lines.push([]);
    top = Math.max(top, row - term.rows + 1);
  };
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === "\x1b") {
      const m = /^\x1b\[(\d*)([A-Za-z])/.exec(raw.slice(i, i + 16));
      if (!m) throw new Error(`unexpected escape at ${i}: ${JSON.stringify(raw.slice(i, i + 16))}`);
      const n = m[1] === "" ? 1 : Number(m[1]);
      if (m[2] === "A") {
        row = Math.max(top, row - n);
      } else if (m[2] === "J" && m[1] === "") {
        lines[row]!.length = Math.min(lines[row]!.length, col);
        lines.length = row + 1;
      } else {
        throw new Error(`unhandled control sequence ${JSON.stringify(m[0])}`);
      }
      i += m[0].length - 1;
    } else if (c === "\r") {
      col = 0;
    } else if (c === "\n") {
      newline();
    } else if (c >= " ") {
      if (col === term.cols) {
        newline();
        col = 0;
      }
      const line = lines[row]!;
      while (line.length < col) line.push(" ");
      line[col++] = c;
    } else {
      throw new Error(`unexpected control character ${JSON.stringify(c)} at ${i}`);
    }
  }
  const text = lines.map((l) => l.join("").trimEnd());
  while (text[0] === "") text.shift();
  while (text.at(-1) === "") text.pop();
  return text;
}

/** Waits until some frame the watch drew so far satisfies `pred`; fails at once if the watch exited. */
function waitForFrame(watch: Proc, what: string, pred: (waves: WaveLine[], f: Frame) => boolean): Promise<Frame> {
  return waitFor(
    `the watch to draw ${what}`,
    () => {
      const found = frames(watch.stdout).find((f) => pred(waveLinesOf(f), f));
      if (!found && watch.exitCode !== null) throw new Error(`the watch exited with ${watch.exitCode}:\n${JSON.stringify(watch.stdout)}`);
      return found;
    },
    60_000,
  );
}

/**
 * Waits for the watch to exit 0, then checks what holds for every frame on any terminal: no line
 * reaches the last column (a line that fills it wraps on some terminals, a longer one on all,
 * and the next redraw then moves up too little), no block is as tall as the screen (the cursor
 * cannot move back up into scrollback), each redraw moves up over exactly the lines of the
 * previous frame and differs from it, and the closing line follows the last frame. Returns the
 * raw output, the frames (the closing line taken off the last) and the closing line.
 */
async function finishedWatch(watch: Proc, term: Term, id: string): Promise<{ raw: string; all: Frame[]; closing: string }> {
  await waitFor("the watch to exit", () => watch.exitCode !== null, 90_000);
  expect(watch.exitCode, watch.stdout).toBe(0);
  const raw = watch.stdout;
  expect(watch.stderr).toBe("");
  expect(raw, "the pty output").not.toMatch(/error:/);

  expect(raw).toMatch(REDRAW);
  const all = frames(raw);
  expect(all.length).toBeGreaterThanOrEqual(5);
  const closing = all.at(-1)!.lines.pop()!;
  expect(closing).toMatch(new RegExp(`^rollout ${id} completed: `));
  // Each check lists every frame that breaks it (soft: one run shows all that is wrong).
  const breaking = (what: (f: Frame, i: number) => string[]) => all.flatMap((f, i) => what(f, i).map((x) => `frame ${i}: ${x}`));
  expect.soft(breaking((f) => f.lines.filter((l) => l.length > term.cols - 1).map((l) => `${l.length} columns: ${l}`)), `lines wider than ${term.cols - 1} columns`).toEqual([]);
  expect.soft(breaking((f) => (f.lines.length > term.rows - 1 ? [`${f.lines.length} lines`] : [])), `frames taller than ${term.rows - 1} lines`).toEqual([]);
  expect.soft(breaking((f, i) => (i > 0 && f.up !== all[i - 1]!.lines.length ? [`moves up ${f.up} over ${all[i - 1]!.lines.length} lines`] : [])), "redraws not moving up over the previous frame").toEqual([]);
  expect.soft(breaking((f, i) => (i > 0 && f.lines.join("\n") === all[i - 1]!.lines.join("\n") ? ["same as the previous frame"] : [])), "redraws repeating the previous frame").toEqual([]);
  return { raw, all, closing };
}

describe("rollout watch on a terminal", () => {
  it("redraws a progress bar per wave and the busy devices in place until the rollout completes", async () => {
    const term = { cols: 120, rows: 40 };
    const fleet = await signedFleet(sb);
    await publish(fleet, sb, "webapp", "1.5.0");
    // 7 steps of 100 ms per device: with at most 3 at once, wave 3 takes a few seconds.
    await swarmOf(fleet, sb, hosts(20), 100);

    // Approval between waves lets the test hold the rollout until the watch is drawing, without
    // racing it: the first wave runs at once, the next ones only when the test approves them.
    const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "1,50%,100%", "--max-parallel", "3", "--approve-each-wave"]);
    expect(r.plan.waves.map((w) => w.devices.length)).toEqual([1, 9, 10]);
    const totals = [1, 9, 10];

    const watch = adminOnPty(fleet, term, ["rollout", "watch", r.id]);
    const counts = (w: WaveLine[]) => w.map((x) => x.healthy).join(",");

    await waitForFrame(watch, "wave 1 done, waiting for approval", (w) => counts(w) === "1,0,0" && w[0]!.mark === "~");
    const a2 = await fleet.admin(["rollout", "approve", r.id]);
    expect(a2.code, a2.stderr).toBe(0);
    await waitForFrame(watch, "wave 2 done, waiting for approval", (w) => counts(w) === "1,9,0" && w[1]!.mark === "~");
    const a3 = await fleet.admin(["rollout", "approve", r.id]);
    expect(a3.code, a3.stderr).toBe(0);

    const { raw, all, closing } = await finishedWatch(watch, term, r.id);
    expect(closing).toMatch(new RegExp(`^rollout ${r.id} completed: 20 healthy, 0 failed, 0 skipped$`));

    // Every frame: the headline, one bar per wave, then the busy devices.
    const head = new RegExp(`^rollout ${r.id} webapp@1\\.5\\.0: (running|completed)`);
    for (const [i, f] of all.entries()) {
      expect(f.lines[0], `frame ${i} headline`).toMatch(head);
      const waves = waveLinesOf(f);
      expect(waves.map((w) => [w.number, w.entry, w.total]), `frame ${i} waves`).toEqual([[1, "1", 1], [2, "50%", 9], [3, "100%", 10]]);
      expect(f.lines.slice(1, 4).every((l) => WAVE_LINE.test(l)), `frame ${i}: wave lines follow the headline`).toBe(true);
      for (const w of waves) {
        expect(w.bar).toHaveLength(BAR_WIDTH);
        expect(w.bar, `frame ${i} wave ${w.number}: bar matches ${w.healthy}/${w.total}`).toBe(barOf(w.healthy, 0, w.total));
      }
      for (const l of f.lines.slice(4)) expect(l, `frame ${i} busy device line`).toMatch(BUSY_LINE);
    }

    // Progress never goes backwards from one frame to the next.
    for (let i = 1; i < all.length; i++) {
      const before = waveLinesOf(all[i - 1]!);
      waveLinesOf(all[i]!).forEach((w, k) => expect(w.healthy, `frame ${i} wave ${w.number}`).toBeGreaterThanOrEqual(before[k]!.healthy));
    }

    // Frames in between showed the rollout on its way: wave 3 partly done, with its busy devices.
    const midWave3 = all.filter((f) => {
      const w = waveLinesOf(f);
      return w[2]!.mark === ">" && w[2]!.healthy > 0 && w[2]!.healthy < 10;
    });
    expect(midWave3.length, "frames with wave 3 partly healthy").toBeGreaterThan(0);
    const busy = all.flatMap((f) => f.lines.slice(4).map((l) => BUSY_LINE.exec(l)!));
    for (const m of busy) expect(m[3], `state of ${m[1]}`).toMatch(BUSY_STATE);
    expect(busy.some((m) => m[2] === "3")).toBe(true);
    expect(all.some((f) => waveLinesOf(f)[2]!.rest.includes("installing"))).toBe(true);
    // Never more devices busy at once than --max-parallel allows.
    for (const f of all) expect(f.lines.length - 4).toBeLessThanOrEqual(3);

    // The final frame: completed, every bar full and N/N healthy, nobody busy.
    const last = all.at(-1)!;
    expect(last.lines[0]).toMatch(new RegExp(`^rollout ${r.id} webapp@1\\.5\\.0: completed`));
    const done = waveLinesOf(last);
    expect(done.map((w) => `${w.mark}|${w.bar}|${w.healthy}/${w.total}|${w.rest}`)).toEqual(totals.map((t) => ` |${"#".repeat(BAR_WIDTH)}|${t}/${t}|`));
    expect(last.lines).toHaveLength(4);

    // And what the terminal shows in the end: one block (the final frame), then the closing line;
    // nothing of the earlier frames is left above it.
    expect(screen(raw, term)).toEqual([...last.lines, closing]);
  }, 180_000);

  it("keeps every frame within an 80x24 terminal: lines cut to fit, busy devices beyond the screen counted, failed devices not listed", async () => {
    const term = { cols: 80, rows: 24 };
    const fleet = await signedFleet(sb);
    await publish(fleet, sb, "webapp", "1.5.0");
    // 30 devices, two of which fail their downloads, both in the first batch of wave 3. 7 steps
    // of 150 ms per device: each state below lasts about a second. Failing at the second step,
    // the two are counted while the rest of the batch still installs, for most of a second
    // (failing at the health check, that overlap shrank to nothing on a loaded machine).
    const failing = new Set(["sw-04", "sw-07"]);
    await swarmOf(fleet, sb, hosts(30).map((h) => ({ ...h, failDownload: failing.has(h.hostname) })), 150);

    // Wave 3 has 27 devices and installs 24 at once: more than the 19 busy lines that fit below
    // a headline and three bars in 23 rows. The other 3 start when the first ones end, while the
    // two failures (tolerated) are counted, so wave 3's line then reads "h/27 healthy, 2 failed,
    // k installing": wider than 79 columns. Approval holds each wave until the watch is drawing.
    const r = await start(fleet, ["webapp@1.5.0", "--selector", "env=prod", "--waves", "1,10%,100%", "--max-parallel", "24", "--failure-threshold", "2", "--approve-each-wave"]);
    expect(r.plan.waves.map((w) => w.devices.length)).toEqual([1, 2, 27]);
    expect(r.plan.waves[2]!.devices.slice(0, 24).map((d) => d.name)).toEqual(expect.arrayContaining([...failing]));

    const watch = adminOnPty(fleet, term, ["rollout", "watch", r.id]);
    const counts = (w: WaveLine[]) => w.map((x) => x.healthy).join(",");
    await waitForFrame(watch, "wave 1 done, waiting for approval", (w) => counts(w) === "1,0,0" && w[0]!.mark === "~");
    const a2 = await fleet.admin(["rollout", "approve", r.id]);
    expect(a2.code, a2.stderr).toBe(0);
    await waitForFrame(watch, "wave 2 done, waiting for approval", (w) => counts(w) === "1,2,0" && w[1]!.mark === "~");
    const a3 = await fleet.admin(["rollout", "approve", r.id]);
    expect(a3.code, a3.stderr).toBe(0);

    const { raw, all, closing } = await finishedWatch(watch, term, r.id);
    expect(closing).toMatch(new RegExp(`^rollout ${r.id} completed: 28 healthy, 2 failed, 0 skipped$`));
    // What an 80x24 terminal shows in the end: the final frame, then the closing line, and
    // nothing of the earlier frames, neither on the screen nor pushed into scrollback.
    const last = all.at(-1)!;
    expect.soft(screen(raw, term), "the terminal at the end").toEqual([...last.lines, closing]);

    const fullWidth = term.cols - 1;
    for (const [i, f] of all.entries()) {
      expect(f.lines[0], `frame ${i} headline`).toMatch(new RegExp(`^rollout ${r.id} webapp@1\\.5\\.0: (running|completed)`));
      const waves = waveLinesOf(f);
      expect(waves.map((w) => [w.number, w.entry, w.total]), `frame ${i} waves`).toEqual([[1, "1", 1], [2, "10%", 2], [3, "100%", 27]]);
      expect(f.lines.slice(1, 4).every((l) => WAVE_LINE.test(l)), `frame ${i}: wave lines follow the headline`).toBe(true);
      // Below the bars: busy devices only (never a failed one), the last line possibly counting
      // those that did not fit. Then the frame fills the 23 rows exactly, and the count adds up
      // to the devices the bars say are installing.
      const below = f.lines.slice(4);
      const more = MORE_LINE.exec(below.at(-1) ?? "");
      const listed = more ? below.slice(0, -1) : below;
      for (const l of listed) {
        const m = BUSY_LINE.exec(l);
        expect(m, `frame ${i} busy device line ${JSON.stringify(l)}`).not.toBeNull();
        expect(m![3], `frame ${i} state of ${m![1]}`).toMatch(BUSY_STATE);
      }
      const installing = waves.every((w) => w.line.length < fullWidth) ? waves.reduce((n, w) => n + Number(/, (\d+) installing$/.exec(w.rest)?.[1] ?? 0), 0) : undefined;
      if (more) {
        expect(f.lines, `frame ${i} with a count of devices left out`).toHaveLength(term.rows - 1);
        if (installing !== undefined) expect(listed.length + Number(more[1]), `frame ${i} busy devices`).toBe(installing);
      } else if (installing !== undefined) {
        expect(listed.length, `frame ${i} busy devices`).toBe(installing);
      }
    }
    // Frames with more devices busy than fit: 18 listed, the rest counted; while all 24 install,
    // "+6 more installing". The count never stands in for a single device (that line would fit).
    const counted = all.flatMap((f) => {
      const m = MORE_LINE.exec(f.lines.at(-1)!);
      return m ? [Number(m[1])] : [];
    });
    expect(counted, "counts of the busy devices that do not fit").toContain(6);
    for (const n of counted) expect(n).toBeGreaterThanOrEqual(2);
    // A wave line with failures and devices installing, cut to the width of the terminal.
    const cut = all.flatMap((f) => waveLinesOf(f)).filter((w) => w.line.length === fullWidth && /, 2 failed, \d/.test(w.rest));
    expect(cut.length, "wave lines cut to fit").toBeGreaterThan(0);

    // The final frame: completed, nobody busy, wave 3 with its two failures; the headline (81
    // characters with the reason) cut to fit.
    const headline = `rollout ${r.id} webapp@1.5.0: completed (28 healthy, 2 failed, 0 skipped)`;
    expect(headline.length).toBeGreaterThan(fullWidth);
    expect(last.lines[0]).toBe(headline.slice(0, fullWidth));
    expect(waveLinesOf(last).map((w) => `${w.mark}|${w.bar}|${w.healthy}/${w.total}${w.rest}`)).toEqual([` |${barOf(1, 0, 1)}|1/1`, ` |${barOf(2, 0, 2)}|2/2`, ` |${barOf(25, 2, 27)}|25/27, 2 failed`]);
    expect(last.lines).toHaveLength(4);
  }, 180_000);
});
