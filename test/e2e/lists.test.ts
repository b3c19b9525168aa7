/**
 * No silent truncation in the CLI's lists, against a real coordinator: `audit ls` says on stderr
 * what its limit left out and which flag lifts it, `--all` pages through every entry, and
 * `audit verify --json` reports its verdict as JSON. Also the organization's retention settings
 * (`org set`, `org show`).
 */
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("lists that never cut silently", () => {
  it("audit ls names what --limit left out; --all lists every entry; verify speaks JSON", async () => {
    const fleet = await new Fleet(sb).start();
    for (let i = 0; i < 7; i++) expect((await fleet.admin(["join-token", "create"])).code).toBe(0);

    const limited = await fleet.admin(["audit", "ls", "--limit", "5", "--json"]);
    expect(limited.code, limited.stderr).toBe(0);
    const five = JSON.parse(limited.stdout) as { seq: number }[];
    expect(five).toHaveLength(5);
    expect(limited.stderr).toBe("flotilla: showing the newest 5 matching entries; older ones match too: --all lists every one, --limit N more of the newest\n");

    const all = await fleet.admin(["audit", "ls", "--all", "--json"]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stderr).toBe("");
    const seqs = (JSON.parse(all.stdout) as { seq: number }[]).map((e) => e.seq);
    expect(seqs.length).toBeGreaterThanOrEqual(7);
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
    expect(five.map((e) => e.seq)).toEqual(seqs.slice(-5));

    const verdict = await fleet.adminJson<{ ok: boolean; entries: number }>(["audit", "verify"]);
    expect(verdict).toMatchObject({ ok: true, entries: seqs.length });
    expect(await fleet.adminJson<unknown[]>(["rollout", "ls"])).toEqual([]);
  });

  it("sets an organization's log and metric retention with org set, shown by org show", async () => {
    const fleet = await new Fleet(sb).start();
    const set = await fleet.adminJson<{ logsMs: number; metricsMs: number; logsOwn: boolean; metricsOwn: boolean }>(["org", "set", "--log-retention", "3d", "--metric-retention", "30d"]);
    expect(set).toEqual({ logsMs: 3 * 86_400_000, metricsMs: 30 * 86_400_000, logsOwn: true, metricsOwn: true });
    expect((await fleet.admin(["org", "set", "--log-retention", "default"])).stdout).toBe("logs kept 7d (coordinator default), metric samples kept 30d\n");
    const bad = await fleet.admin(["org", "set", "--log-retention", "10s"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toBe("error: log retention must be at least 1 minute and at most about 60 years\n");
    expect(await fleet.adminJson<{ logsOwn: boolean; metricsMs: number }>(["org", "show"])).toMatchObject({ logsOwn: false, metricsMs: 30 * 86_400_000 });
  });
});
