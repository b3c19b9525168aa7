import { UsageError } from "./errors.ts";

/** Renders rows as an aligned text table for people. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

/** Pretty JSON for scripts, newline-terminated. */
export function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + "\n";
}

/** "3m ago" style, for last-seen columns. */
export function ago(ms: number | undefined, now = Date.now()): string {
  if (ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

/** Longest duration parseDuration accepts: 100 years, so that now plus or minus it is still a date. */
const MAX_DURATION_MS = 36_500 * 86_400_000;

/** Parses a duration such as 90s, 15m, 12h, 7d (at most 36500d) into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`invalid duration ${JSON.stringify(text)}: expected e.g. 90s, 15m, 12h, 7d`);
  const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"];
  const ms = Number(m[1]) * unit;
  if (!(ms <= MAX_DURATION_MS)) throw new UsageError(`invalid duration ${JSON.stringify(text)}: longer than 36500d`);
  return ms;
}

/** Parses k=v,k2=v2 into a map. */
export function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf("=");
    if (eq <= 0) throw new UsageError(`invalid label ${JSON.stringify(part)}: expected key=value`);
    out[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return out;
}
