/**
 * Benchmark results on disk: each run writes `bench/results/<kind>-<ISO date>.json` (the kind is
 * the benchmark's name), and `npm run bench -- targets` reads the newest of each kind back.
 */
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { repoRoot } from "../test/e2e/support/sandbox.ts";

export const resultsDir = join(repoRoot, "bench", "results");

/** Writes one run's figures as `<kind>-<date>.json`, with its date; returns the file written. */
export async function writeResult(kind: string, figures: object): Promise<string> {
  await mkdir(resultsDir, { recursive: true });
  const date = new Date().toISOString();
  const file = join(resultsDir, `${kind}-${date.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, JSON.stringify({ date, ...figures }, null, 2) + "\n");
  return file;
}

/** A result file as read back: its name, its kind, its date and its figures. */
export interface StoredResult {
  file: string;
  kind: string;
  date: string;
  data: Record<string, unknown>;
}

/** Every result file of `kind`, newest first. Files that do not parse are left out. */
export async function readResults(kind: string, dir = resultsDir): Promise<StoredResult[]> {
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith(`${kind}-2`) && n.endsWith(".json"));
  const out: StoredResult[] = [];
  for (const name of names) {
    try {
      const data = JSON.parse(await readFile(join(dir, name), "utf8")) as unknown;
      if (typeof data !== "object" || data === null || Array.isArray(data)) continue;
      const figures = data as Record<string, unknown>;
      out.push({ file: name, kind, date: typeof figures.date === "string" ? figures.date : "", data: figures });
    } catch {
      // A half-written or hand-edited file: not a result.
    }
  }
  return out.sort((a, b) => b.date.localeCompare(a.date));
}
