/**
 * Wave specifications: cumulative targets such as `1,10%,50%,100%`. A bare number is a count of
 * devices, `N%` a share of the rollout's devices (rounded up); each entry reaches at least as far
 * as the one before, they strictly increase within their kind, and the last is `100%`.
 */

/** One entry of a wave specification, as given. */
export type WaveEntry = { readonly text: string; readonly count: number } | { readonly text: string; readonly percent: number };

/** Most waves a rollout may have. */
export const MAX_WAVES = 20;

/** A wave specification that does not parse; the message names the offending entry. */
export class WaveSpecError extends Error {
  override readonly name = "WaveSpecError";
}

/** Parses and checks wave entries; throws a WaveSpecError naming the first bad entry. */
export function parseWaves(entries: readonly string[]): WaveEntry[] {
  if (entries.length === 0) throw new WaveSpecError("at least one wave is required (e.g. 1,10%,100%)");
  if (entries.length > MAX_WAVES) throw new WaveSpecError(`at most ${MAX_WAVES} waves`);
  const out: WaveEntry[] = [];
  let lastCount = 0;
  let lastPercent = 0;
  for (const [i, raw] of entries.entries()) {
    const text = raw.trim();
    const where = `wave ${i + 1} (${JSON.stringify(raw)})`;
    const pct = /^(\d{1,3})%$/.exec(text);
    if (pct) {
      const percent = Number(pct[1]);
      if (percent < 1 || percent > 100) throw new WaveSpecError(`${where}: a percentage must be between 1% and 100%`);
      if (percent <= lastPercent) throw new WaveSpecError(`${where}: percentages must strictly increase (after ${lastPercent}%)`);
      lastPercent = percent;
      out.push({ text, percent });
    } else if (/^\d{1,7}$/.test(text)) {
      const count = Number(text);
      if (count < 1) throw new WaveSpecError(`${where}: a device count must be at least 1`);
      if (count <= lastCount) throw new WaveSpecError(`${where}: device counts must strictly increase (after ${lastCount})`);
      if (lastPercent > 0) throw new WaveSpecError(`${where}: a device count may not follow a percentage`);
      lastCount = count;
      out.push({ text, count });
    } else {
      throw new WaveSpecError(`${where}: expected a device count such as 1 or a percentage such as 10%`);
    }
  }
  const last = out[out.length - 1]!;
  if (!("percent" in last) || last.percent !== 100) {
    throw new WaveSpecError(`the last wave must be 100%, not ${JSON.stringify(last.text)}: the waves do not add up to the whole selection`);
  }
  return out;
}

/**
 * Splits `total` ordered devices into waves: the cumulative target of each entry, never below
 * the one before, with waves that would add nothing dropped. Returns [entry, size] pairs.
 */
export function waveSizes(entries: readonly WaveEntry[], total: number): { entry: string; size: number }[] {
  const out: { entry: string; size: number }[] = [];
  let reached = 0;
  for (const e of entries) {
    const target = "count" in e ? Math.min(e.count, total) : Math.ceil((e.percent * total) / 100);
    const next = Math.max(reached, Math.min(target, total));
    if (next > reached) out.push({ entry: e.text, size: next - reached });
    reached = next;
  }
  return out;
}

/** A failure threshold: an absolute count ("3") or a share ("5%"). Empty means 0: the first failure pauses. */
export function parseThreshold(text: string): { count: number } | { percent: number } {
  const t = text.trim();
  if (t === "") return { count: 0 };
  const pct = /^(\d{1,3}(?:\.\d{1,2})?)%$/.exec(t);
  if (pct && Number(pct[1]) <= 100) return { percent: Number(pct[1]) };
  if (/^\d{1,7}$/.test(t)) return { count: Number(t) };
  throw new WaveSpecError(`invalid failure threshold ${JSON.stringify(text)}: expected a count such as 2 or a percentage such as 5%`);
}

/** How many failures a rollout of `total` devices tolerates; one more pauses it. */
export function toleratedFailures(threshold: string, total: number): number {
  const t = parseThreshold(threshold);
  return "count" in t ? t.count : Math.floor((t.percent * total) / 100);
}
