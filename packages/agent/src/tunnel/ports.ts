import * as z from "zod";

/**
 * The agent's tunnel allowlist from a flag or variable ("22,8080", "none" for no tunnels) or a
 * TOML array ([22, 8080]). It is the agent's own: nothing from the coordinator changes it.
 */
export const tunnelPortsSchema = z
  .union([z.string(), z.array(z.union([z.number(), z.string()]))])
  .transform((raw, ctx): number[] => {
    const items = typeof raw === "string" ? (["none", ""].includes(raw.trim()) ? [] : raw.split(",")) : raw;
    const ports = new Set<number>();
    for (const item of items) {
      const n = typeof item === "number" ? item : Number(item.trim());
      if (!Number.isInteger(n) || n < 1 || n > 65535) {
        ctx.addIssue({ code: "custom", message: `invalid port ${JSON.stringify(item)}: expected 1 to 65535, e.g. 22,8080` });
        return [];
      }
      ports.add(n);
    }
    return [...ports].sort((a, b) => a - b);
  });

/** The capabilities tunnels add to what the agent reports: `tunnel` when any port is allowed. */
export function tunnelCapabilities(ports: readonly number[]): string[] {
  return ports.length > 0 ? ["tunnel"] : [];
}
