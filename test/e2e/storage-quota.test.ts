/**
 * Storage quotas with real processes: a coordinator started with --storage-quota and the CLI
 * uploading releases through a deployer's API token.
 */
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { buildSystem, closure, copyTo, nixOrg, writeNetrc } from "./support/nix.ts";
import { artifact, files, ownerToken, patchUpload, sha256, signedFleet, uploadState } from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("storage quotas", () => {
  it("refuses a release whose artifact would pass the organization's quota, with one error line, keeping nothing of it", async () => {
    const fleet = await signedFleet(sb, ["--storage-quota", "1MiB"]);
    const dir = await sb.dir();
    const created = await fleet.admin(["token", "create", "ci", "--role", "deployer"]);
    expect(created.code, created.stderr).toBe(0);
    const deployer = { FLOTILLA_TOKEN: created.stdout.trim().split("\n").pop()! };
    const first = await artifact(dir, "first.tar.gz", 600 * 1024);
    const second = await artifact(dir, "second.tar.gz", 600 * 1024);

    const ok = await fleet.admin(["release", "create", first.path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"], deployer);
    expect(ok.code, ok.stderr).toBe(0);

    const refused = await fleet.admin(["release", "create", second.path, "--name", "app", "--version", "1.0.1", "--run", "bin/app"], deployer);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toBe(
      "error: coordinator refused the upload: this upload of 600 KiB would pass organization default's storage quota of 1 MiB: " +
        "600 KiB is in use (0 B of it by unfinished uploads)\n",
    );
    expect(await files(join(fleet.dataDir, "artifacts", "sha256"))).toEqual([sha256(first.data)]);
    expect(await files(join(fleet.dataDir, "artifacts", "uploads"))).toEqual([]);
    const releases = await fleet.adminJson<{ version: string }[]>(["release", "ls"]);
    expect(releases.map((r) => r.version)).toEqual(["1.0.0"]);
    const audit = await fleet.adminJson<{ action: string; target: string; outcome: string }[]>(["audit", "ls"]);
    expect(audit.filter((e) => e.action === "UploadArtifact").map((e) => [e.target, e.outcome])).toEqual([[sha256(first.data), "ok"]]);

    // The same bytes again cost nothing: that release still goes through.
    const again = await fleet.admin(["release", "create", first.path, "--name", "app", "--version", "1.0.2", "--run", "bin/app"], deployer);
    expect(again.code, again.stderr).toBe(0);
  });

  it("removes an upload abandoned half-way once it is older than --stale-upload-after-ms, and gives its room back", async () => {
    const fleet = await signedFleet(sb, ["--storage-quota", "1MiB", "--stale-upload-after-ms", "2000"]);
    const dir = await sb.dir();
    const token = await ownerToken(fleet);
    const abandoned = await artifact(dir, "abandoned.tar.gz", 900 * 1024);
    const next = await artifact(dir, "next.tar.gz", 900 * 1024);

    // A client dies after sending part of the artifact: its part file holds the room of all of it.
    const sha = sha256(abandoned.data);
    expect(await patchUpload(fleet, token, { sha256: sha, length: abandoned.data.length, offset: 0, body: abandoned.data, complete: true, breakAfter: 100 * 1024 })).toBe("broken");
    expect(await files(join(fleet.dataDir, "artifacts", "uploads"))).toHaveLength(1);

    await waitFor("the abandoned upload to be removed", async () => ((await files(join(fleet.dataDir, "artifacts", "uploads"))).length === 0 ? true : undefined), 20_000, 100);
    expect(await uploadState(fleet, token, sha, abandoned.data.length)).toEqual({ complete: false, offset: 0 });
    const r = await fleet.admin(["release", "create", next.path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"]);
    expect(r.code, r.stderr).toBe(0);
  });

  it("refuses `nix copy --to` past the quota with the reason in nix's error, keeping no NAR of it", async () => {
    const fleet = await signedFleet(sb, ["--storage-quota", "100"]);
    const { token, cacheUrl } = await nixOrg(fleet);
    const netrc = await writeNetrc(sb, fleet.url, token);
    const system = await buildSystem(sb, join(await sb.dir(), "switch.log"));
    expect(await closure(system)).toHaveLength(2);

    const up = await copyTo(cacheUrl, netrc, system);
    expect(up.code).not.toBe(0);
    expect(up.stderr).toMatch(/HTTP error 413/);
    expect(up.stderr).toContain("would pass organization default's storage quota of 100 B");
    expect(await files(join(fleet.dataDir, "nix", "sha256"))).toEqual([]);
    expect(await files(join(fleet.dataDir, "nix", "tmp"))).toEqual([]);
  });
});
