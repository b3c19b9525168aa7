/**
 * Backup and restore of the coordinator: a backup taken while a rollout runs, restored onto a new
 * data directory; the coordinator started from it on the same address keeps its key, and the
 * agents that were connected carry on without re-enrolling: same device ids, same pin, logs
 * still arriving, a release signed after the restore installed. A damaged backup is refused in
 * one line and leaves nothing behind.
 */
import { execFileSync } from "node:child_process";
import { appendFile, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet, freshPostgresDatabase } from "./support/fleet.ts";
import { deviceReleases, sha256, signedFleet } from "./support/releases.ts";
import { publish, show, start, waitForStatus } from "./support/rollouts.ts";
import { killProcessesUnder } from "./support/sandbox.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const pinOf = async (stateDir: string) => (JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { pin: string }).pin;

async function coordinatorPin(dataDir: string): Promise<string> {
  const r = await sb.run(["id", "--data-dir", dataDir, "--pin"]);
  if (r.code !== 0) throw new Error(`flotilla id failed: ${r.stderr}`);
  return r.stdout.trim();
}

/** Every file below `dir` with its mode, as relative paths. */
async function modes(dir: string, rel = ""): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of await readdir(join(dir, rel))) {
    const child = rel ? `${rel}/${name}` : name;
    const s = await stat(join(dir, child));
    if (s.isDirectory()) for (const [k, v] of await modes(dir, child)) out.set(k, v);
    else out.set(child, s.mode & 0o777);
  }
  return out;
}

describe("coordinator backup and restore", () => {
  it("restores a backup taken during a running rollout onto a new data directory, and the agents carry on without re-enrolling", async () => {
    const fleet = await signedFleet(sb);
    // Healthy after 6 s up: the rollout runs long enough for a backup to catch it running.
    await publish(fleet, sb, "webapp", "1.0.0", ["--health-up-seconds", "6"]);

    // Two real agents, the first following an application log.
    const join_ = await fleet.joinToken(["--auto-approve", "--uses", "2", "--labels", "env=prod"]);
    const stateDir = await sb.dir("flotilla-agent-");
    const otherDir = await sb.dir("flotilla-agent-");
    for (const d of [stateDir, otherDir]) sb.onCleanup(() => killProcessesUnder(d));
    const appLog = join(await sb.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, "");
    const agent = fleet.startAgent(stateDir, join_, ["--log-file-unit", `app=${appLog}`]);
    const real = await waitFor("the first agent online", async () => (await fleet.devices()).find((d) => d.status === "online"), 40_000, 250);
    const other = fleet.startAgent(otherDir, join_, [], "agent-2");
    await waitFor(
      "both agents online, declaring release:bundle",
      async () => (await fleet.adminJson<{ status: string; capabilities: string[] }[]>(["device", "ls"])).filter((d) => d.status === "online" && d.capabilities.includes("release:bundle")).length === 2,
      40_000,
      250,
    );
    const before = (await fleet.devices()).map((d) => d.id).sort();
    expect(before).toHaveLength(2);
    const pins = [await pinOf(stateDir), await pinOf(otherDir)];

    const rollout = await start(fleet, ["webapp@1.0.0", "--selector", "env=prod", "--waves", "1,100%", "--max-parallel", "1"]);
    expect(rollout.status).toBe("running");
    const file = join(await sb.dir("flotilla-backup-"), "coordinator.backup");
    const backup = await sb.run(["coordinator", "backup", "--data-dir", fleet.dataDir, "--to", file]);
    expect(backup.code, backup.stderr).toBe(0);
    const id = (await fleet.coordinator.waitForOutput(/coordinator (\S+) listening/))[1]!;
    expect(backup.stdout).toMatch(/^backup of coordinator \S+ written to .*coordinator\.backup: \d+ files/);
    expect(backup.stdout).toContain(`backup of coordinator ${id} `);
    expect((await show(fleet, rollout.id)).status).toBe("running");
    // The rollout finishes before the coordinator is lost: what the devices reported after the
    // backup is gone with it.
    await waitForStatus(fleet, rollout.id, "completed", 120_000);

    // The coordinator's machine is lost: a new data directory, the same address.
    const oldDir = fleet.dataDir;
    const oldModes = await modes(oldDir);
    await fleet.coordinator.stop();
    const newDir = join(await sb.dir("flotilla-restored-"), "data");
    const restored = await sb.run(["coordinator", "restore", file, "--data-dir", newDir]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/^restored the backup of coordinator \S+ .* into .*data: \d+ files/);
    expect(restored.stdout).toMatch(/database integrity ok; all 1 release artifact\(s\) and 0 NAR file\(s\) it refers to are present/);
    // max-parallel 1: the backup caught one device installing, whose report it lacks.
    expect(restored.stdout).toMatch(/^1 device\(s\) a rollout was waiting on are told their release again/m);
    // Keys, TUF metadata and artifacts come back with their modes.
    const newModes = await modes(newDir);
    for (const [path, mode] of oldModes) {
      if (/^flotilla\.db/.test(path) || path.startsWith("artifacts/uploads/")) continue;
      expect(newModes.get(path), path).toBe(mode);
    }
    expect(newModes.get("coordinator.key")).toBe(0o600);
    expect(newModes.get("online.key")).toBe(0o600);
    expect(await coordinatorPin(newDir)).toBe(await coordinatorPin(oldDir));
    // Nothing of the old data directory is left to lean on.
    await rm(oldDir, { recursive: true, force: true });

    fleet.dataDir = newDir;
    await fleet.startCoordinator();
    expect((await fleet.coordinator.waitForOutput(/coordinator (\S+) listening/))[1]).toBe(id);
    // The same agent process reconnects: same device, same pinned key, no second enrollment.
    await waitFor("both devices online again", async () => (await fleet.devices()).filter((d) => d.status === "online").length === 2, 40_000, 250);
    expect((await fleet.devices()).map((d) => d.id).sort()).toEqual(before);
    expect([await pinOf(stateDir), await pinOf(otherDir)]).toEqual(pins);
    expect(agent.exitCode).toBeNull();
    expect(other.exitCode).toBeNull();

    // The rollout the backup caught running finishes on the restored coordinator too.
    const done = await waitForStatus(fleet, rollout.id, "completed", 60_000);
    expect(done.devices.every((d) => d.state === "healthy")).toBe(true);

    // Logs keep flowing from the agent to the restored coordinator.
    const marker = `after-restore-${Date.now()}`;
    await appendFile(appLog, `${marker}\n`);
    await waitFor(
      "the line logged after the restore",
      async () => {
        const r = await fleet.admin(["logs", real.name, "--unit", "app", "-n", "100"]);
        return r.code === 0 && r.stdout.includes(marker);
      },
      30_000,
      250,
    );

    // A release signed after the restore verifies against the restored TUF repository and installs.
    await publish(fleet, sb, "webapp", "1.1.0");
    const second = await start(fleet, ["webapp@1.1.0", "--selector", "env=prod", "--waves", "100%"]);
    await waitForStatus(fleet, second.id, "completed", 120_000);
    const releases = await deviceReleases(fleet, real.name);
    expect(releases.releases.find((r) => r.name === "webapp")?.current?.version).toBe("1.1.0");
    expect((await deviceReleases(fleet, before.find((id) => id !== real.id)!)).releases.find((r) => r.name === "webapp")?.current?.version).toBe("1.1.0");
    expect((await fleet.devices()).map((d) => d.id).sort()).toEqual(before);
  }, 300_000);

  it("refuses a damaged or truncated backup in one line, leaving no data directory behind, and a non-empty target", async () => {
    const fleet = await new Fleet(sb).start();
    const dir = await sb.dir("flotilla-backup-");
    const file = join(dir, "good.backup");
    const backup = await sb.run(["coordinator", "backup", "--data-dir", fleet.dataDir, "--to", file]);
    expect(backup.code, backup.stderr).toBe(0);
    // Written whole or not at all: no temporary files are left beside it.
    expect(await readdir(dir)).toEqual(["good.backup"]);
    const again = await sb.run(["coordinator", "backup", "--data-dir", fleet.dataDir, "--to", file]);
    expect(again.code).toBe(1);
    expect(again.stderr.trim()).toMatch(/^error: .*good\.backup exists already/);

    const bytes = await readFile(file);
    const truncated = join(dir, "truncated.backup");
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)));
    const flipped = join(dir, "flipped.backup");
    const damaged = Buffer.from(bytes);
    damaged[Math.floor(damaged.length / 2)]! ^= 0xff;
    await writeFile(flipped, damaged);
    const foreign = join(dir, "foreign.backup");
    await writeFile(foreign, "not a backup at all\n");
    const empty = join(dir, "empty.backup");
    await writeFile(empty, "");

    const parent = await sb.dir("flotilla-restore-");
    for (const bad of [truncated, flipped, foreign, empty]) {
      const r = await sb.run(["coordinator", "restore", bad, "--data-dir", join(parent, "data")]);
      expect(r.code, bad).toBe(1);
      const lines = r.stderr.trim().split("\n");
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^error: .*\.backup cannot be restored: it (is damaged or truncated|ends early|is not a flotilla backup|is empty)/);
      // Nothing half-written: neither the data directory nor a temporary folder beside it.
      expect(await readdir(parent), bad).toEqual([]);
    }

    const occupied = await sb.dir("flotilla-occupied-");
    await writeFile(join(occupied, "something"), "x");
    const r = await sb.run(["coordinator", "restore", file, "--data-dir", occupied]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^error: .* is not empty: restore into a new or empty folder$/);
    expect(await readdir(occupied)).toEqual(["something"]);

    // The good backup restores into an empty folder that exists already.
    const emptyDir = await sb.dir("flotilla-empty-");
    const ok = await sb.run(["coordinator", "restore", file, "--data-dir", emptyDir]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(await readdir(emptyDir)).toEqual(expect.arrayContaining(["coordinator.key", "online.key", "flotilla.db"]));
  }, 120_000);

  it.skipIf(!process.env.FLOTILLA_TEST_POSTGRES_URL)(
    "with PostgreSQL: pg_dump plus the file store, restored onto a new database and data directory, checked by verify",
    async () => {
      const url = await freshPostgresDatabase(sb);
      const fleet = await signedFleet(sb, ["--database-url", url]);
      await publish(fleet, sb, "webapp", "1.0.0");
      const stateDir = await sb.dir("flotilla-agent-");
      sb.onCleanup(() => killProcessesUnder(stateDir));
      const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]));
      const device = await waitFor("the agent online", async () => (await fleet.devices()).find((d) => d.status === "online"), 40_000, 250);

      // The procedure of the README: the database with pg_dump first, then the file store.
      const dir = await sb.dir("flotilla-backup-");
      execFileSync("pg_dump", ["--format=custom", "--file", join(dir, "db.dump"), url]);
      const backup = await sb.run(["coordinator", "backup", "--data-dir", fleet.dataDir, "--database-url", url, "--to", join(dir, "files.backup")]);
      expect(backup.code, backup.stderr).toBe(0);
      expect(backup.stdout).toMatch(/back up the PostgreSQL database with pg_dump/);
      await fleet.coordinator.stop();

      const newUrl = await freshPostgresDatabase(sb);
      execFileSync("pg_restore", ["--no-owner", "--dbname", newUrl, join(dir, "db.dump")]);
      const newDir = join(await sb.dir("flotilla-restored-"), "data");
      const restored = await sb.run(["coordinator", "restore", join(dir, "files.backup"), "--data-dir", newDir]);
      expect(restored.code, restored.stderr).toBe(0);
      expect(restored.stdout).toMatch(/restore it with pg_restore, then check with `flotilla coordinator verify/);
      expect(await readdir(newDir)).not.toContain("flotilla.db");

      const verify = await sb.run(["coordinator", "verify", "--data-dir", newDir, "--database-url", newUrl]);
      expect(verify.code, verify.stderr).toBe(0);
      expect(verify.stdout).toMatch(/all 1 release artifact\(s\) and 0 NAR file\(s\) the database refers to are present/);
      // A file store that lacks an artifact the database names is caught, and the file named.
      const artifacts = join(newDir, "artifacts", "sha256");
      const [hex] = await readdir(artifacts);
      expect(hex).toBe(sha256(await readFile(join(artifacts, hex!))));
      await rename(join(artifacts, hex!), join(newDir, "aside"));
      const missing = await sb.run(["coordinator", "verify", "--data-dir", newDir, "--database-url", newUrl]);
      expect(missing.code).toBe(1);
      expect(missing.stdout).toContain(`artifacts/sha256/${hex}`);
      expect(missing.stderr.trim()).toMatch(/^error: .* does not hold what its database refers to/);
      await rename(join(newDir, "aside"), join(artifacts, hex!));

      fleet.dataDir = newDir;
      fleet.extraArgs.splice(0, fleet.extraArgs.length, "--database-url", newUrl);
      await fleet.startCoordinator();
      await waitFor("the agent online again", async () => (await fleet.device(device.id))?.status === "online", 40_000, 250);
      expect((await fleet.devices()).map((d) => d.id)).toEqual([device.id]);
      expect(agent.exitCode).toBeNull();
    },
    180_000,
  );
});
