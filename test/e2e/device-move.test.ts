/**
 * `flotilla device move` end to end: a real coordinator, CLI and bundle agent. A device running
 * a release moves to another organization of the coordinator: it keeps running the release,
 * leaves the old organization's lists and joins the new one's, both audit logs record it, its
 * agent switches its trust to the new organization's root on the old root keys' signature, and
 * it then installs a release of the new organization. An admin of the new organization alone
 * cannot take a device.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { tufRootDigest } from "@flotilla/protocol";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import type { Fleet } from "./support/fleet.ts";
import { bundleAgent, bundleTarball, createRelease, served, serverFlags, signedFleet, waitForEnd, type StepJson } from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const names = async (fleet: Fleet, org?: string) =>
  (await fleet.adminJson<{ name: string; status: string }[]>([...(org ? ["--org", org] : []), "device", "ls"])).map((d) => `${d.name} ${d.status}`);

describe("device move", () => {
  it("moves a device running a release to another organization: it keeps running, changes lists, and then takes the new organization's release", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir, agent } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
    expect((await waitForEnd(fleet, name, "app/1/app.tar.gz")).at(-1)).toMatchObject({ step: "healthy" });
    const running = await served(port);
    expect(running).toBeDefined();

    // The destination has its own signing root (another root than the old organization's).
    expect((await fleet.admin(["org", "create", "acme"])).code).toBe(0);
    const signing = await fleet.admin(["--org", "acme", "signing-key", "add"]);
    expect(signing.code, signing.stderr).toBe(0);

    // The attack: a leaked admin token of the destination cannot take the device.
    const token = await fleet.admin(["--org", "acme", "token", "create", "leaked", "--role", "admin", "--expires", "1d"]);
    expect(token.code, token.stderr).toBe(0);
    const secret = token.stdout.trim().split("\n").at(-1)!;
    const thief = await fleet.admin(["device", "move", name, "--to-org", "acme", "--to-org-token", secret], { FLOTILLA_TOKEN: secret, FLOTILLA_HOME: await sb.dir("flotilla-thief-") });
    expect(thief.code).not.toBe(0);
    expect(thief.stderr).toBe(`error: no device "${name}"\n`);
    expect(await names(fleet)).toEqual([`${name} online`]);

    const moved = await fleet.admin(["device", "move", name, "--to-org", "acme"]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toContain(`moved ${name} to organization acme`);

    // Gone from the old organization's list; online in the new one once its agent follows.
    expect(await names(fleet)).toEqual([]);
    await waitFor("the device online in acme", async () => ((await names(fleet, "acme")).includes(`${name} online`) ? true : undefined), 30_000, 250);
    await agent.waitForOutput(/device moved to another organization/);
    expect(await served(port)).toBe(running);

    // Its enrollment names the new organization's root, the one the admin verified.
    const enrollment = JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { orgId: string; root?: unknown };
    const acmeRoots = await readRootOf(fleet, enrollment.orgId);
    expect(enrollment.root).toEqual(tufRootDigest(acmeRoots));

    // Both audit logs record the move.
    const audit = async (org?: string) =>
      (await fleet.adminJson<{ action: string; outcome: string; detail: string }[]>([...(org ? ["--org", org] : []), "audit", "ls"])).filter((e) => e.action === "MoveDevice" && !e.detail.includes("(prepare)"));
    expect(await audit()).toEqual([expect.objectContaining({ outcome: "ok", detail: "to organization acme" })]);
    expect(await audit("acme")).toEqual([expect.objectContaining({ outcome: "ok", detail: expect.stringMatching(/^arrived from organization org_/) as string })]);

    // The new organization's release installs: verified through the new root.
    const port2 = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app2.tar.gz", { port: port2 })).path, "app", "2.0.0", ["--org", "acme", ...serverFlags(port2)]);
    const deploy = await fleet.admin(["--org", "acme", "device", "deploy", name, "app@2.0.0"]);
    expect(deploy.code, deploy.stderr).toBe(0);
    const steps = await waitFor(
      "app 2.0.0 to end on the moved device",
      async () => {
        const s = (await fleet.adminJson<{ steps: StepJson[] }>(["--org", "acme", "device", "show", name])).steps.filter((x) => x.targetPath === "app/1/app2.tar.gz");
        return s.some((x) => ["healthy", "failed", "rolled-back"].includes(x.step)) ? s : undefined;
      },
      60_000,
      250,
    );
    expect(steps.at(-1), JSON.stringify(steps)).toMatchObject({ step: "healthy" });
    expect(await served(port2)).toBeDefined();
  });
});

/** The newest root metadata of an organization, as the coordinator stores it. */
async function readRootOf(fleet: Fleet, orgId: string): Promise<unknown> {
  const { readdir } = await import("node:fs/promises");
  const dir = join(fleet.dataDir, "tuf", orgId);
  const latest = Math.max(...(await readdir(dir)).map((f) => Number(/^(\d+)\.root\.json$/.exec(f)?.[1] ?? 0)));
  return JSON.parse(await readFile(join(dir, `${latest}.root.json`), "utf8")) as unknown;
}
