/**
 * Sizes as people write them in configuration ("20GiB", "500 MB", "1048576") and as messages
 * show them ("19.5 GiB").
 */
import * as z from "zod";

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};

/**
 * Bytes from a whole number of bytes or a number with a unit: B, KB/MB/GB/TB (powers of 1000),
 * KiB/MiB/GiB/TiB (powers of 1024), any case, a space allowed. Throws a one-line Error otherwise.
 */
export function parseByteSize(text: string): number {
  const m = /^\s*(\d{1,16}(?:\.\d{1,6})?)\s*([a-z]{0,3})\s*$/i.exec(text);
  const unit = m ? UNITS[(m[2] || "b").toLowerCase()] : undefined;
  // A fraction needs a unit larger than a byte ("1.5GiB", not "1.5").
  const whole = unit !== 1 || !m?.[1]?.includes(".");
  const bytes = m && unit !== undefined && whole ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(bytes)) throw new Error(`expected a size such as 20GiB, 500MB or 1048576 (bytes), not ${JSON.stringify(text)}`);
  return bytes;
}

/** A size in binary units, at most one decimal: "0 B", "700 KiB", "1.5 GiB". */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? String(v) : String(Math.round(v * 10) / 10)} ${units[i]}`;
}

/**
 * A quota option's schema: a size (see {@link parseByteSize}) or a number of bytes, where 0 or
 * "unlimited" means no quota (0). Its output, a number, loads back.
 */
export function quotaSchema(): z.ZodType<number> {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    if (typeof v === "string" && v.trim().toLowerCase() === "unlimited") return 0;
    try {
      const bytes = typeof v === "number" ? v : parseByteSize(v);
      if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error("expected a whole number of bytes, 0 or more");
      return bytes;
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  });
}

/**
 * Per-organization quotas: `name=size` pairs, comma-separated (a flag, an environment variable),
 * or a TOML table `{ acme = "100GiB" }`; each size as {@link quotaSchema} reads it. Keys are
 * organization names or ids.
 */
export function orgQuotasSchema(): z.ZodType<Record<string, number>> {
  const quota = quotaSchema();
  return z
    .union([z.string(), z.record(z.string(), z.union([z.number(), z.string()]))])
    .transform((v, ctx) => {
      const pairs: [string, unknown][] = [];
      if (typeof v === "string") {
        for (const item of v.split(",").map((s) => s.trim()).filter(Boolean)) {
          const eq = item.indexOf("=");
          if (eq <= 0) {
            ctx.addIssue({ code: "custom", message: `expected organization=size, not ${JSON.stringify(item)}` });
            return z.NEVER;
          }
          pairs.push([item.slice(0, eq).trim(), item.slice(eq + 1).trim()]);
        }
      } else {
        pairs.push(...Object.entries(v));
      }
      const out: [string, number][] = [];
      for (const [org, size] of pairs) {
        const parsed = quota.safeParse(size);
        if (!parsed.success) {
          ctx.addIssue({ code: "custom", message: `${org}: ${parsed.error.issues[0]?.message ?? "invalid size"}` });
          return z.NEVER;
        }
        out.push([org, parsed.data]);
      }
      return Object.fromEntries(out);
    });
}
