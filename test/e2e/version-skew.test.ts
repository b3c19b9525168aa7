/**
 * Version skew (issue 17, docs/install.md "Version skew"): the previous released version of
 * Flotilla, built from its commit named in releases.json into a temporary folder, against this
 * checkout. Real processes both ways: an agent of the previous version with the current
 * coordinator, and a current agent (and current CLI) with the previous coordinator.
 *
 * The previous version is built from git history, so a checkout without it (a tarball, or a
 * shallow clone that lacks the commit) fails here with the reason instead of passing unchecked.
 */
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, realpath, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { VERSION } from "@flotilla/protocol";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { artifact, bundleAgent, bundleTarball, createRelease, served, serverFlags, signedFleet, waitForEnd } from "./support/releases.ts";
import { swarmOf, type PlanJson } from "./support/rollouts.ts";
import { repoRoot } from "./support/sandbox.ts";
import { useSandbox } from "./support/use-sandbox.ts";

interface Release {
  version: string;
  commit: string;
}

interface Previous extends Release {
  /** The previous version's bin/flotilla.js, built in `dir`. */
  bin: string;
  dir: string;
  /** How its dependencies were provided: linked from this checkout, or installed with npm ci. */
  dependencies: "linked" | "npm ci";
}

const git = (args: string[]): string => execFileSync("git", ["-C", repoRoot, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();

/** [major, minor, patch] of a version, for ordering releases.json's entries. */
const semver = (v: string): number[] => v.split(/[.-]/).slice(0, 3).map((n) => Number.parseInt(n, 10) || 0);
const newerFirst = (a: Release, b: Release): number => {
  const [x, y] = [semver(a.version), semver(b.version)];
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return y[i]! - x[i]!;
  return 0;
};

/**
 * The previous release: the newest entry of releases.json whose version is not package.json's
 * (the version being worked on). While package.json still carries the newest released version
 * (no bump after a release yet), that release is the previous one, provided HEAD is not its commit.
 */
async function previousRelease(): Promise<Release> {
  const { releases } = JSON.parse(await readFile(join(repoRoot, "releases.json"), "utf8")) as { releases: Release[] };
  const current = (JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
  const sorted = [...releases].sort(newerFirst);
  const other = sorted.find((r) => r.version !== current);
  if (other) return other;
  const head = git(["rev-parse", "HEAD"]);
  const same = sorted.find((r) => r.version === current && !head.startsWith(r.commit) && !r.commit.startsWith(head));
  if (same) return same;
  throw new Error(`releases.json names no release before the current version ${current} at ${head}: nothing to test version skew against`);
}

/** Fails with the reason when the checkout has no git history holding `r.commit`. */
function requireHistory(r: Release): void {
  const hint = `the version-skew tests build ${r.version} from commit ${r.commit} (releases.json) and need the repository's git history`;
  let top: string;
  try {
    top = git(["rev-parse", "--show-toplevel"]);
  } catch {
    throw new Error(`${hint}, but ${repoRoot} is not a git checkout (a tarball?): run them in a clone of main`);
  }
  try {
    git(["cat-file", "-e", `${r.commit}^{commit}`]);
  } catch {
    throw new Error(`${hint}, but the clone at ${top} does not hold that commit (shallow? run git fetch --unshallow)`);
  }
}

/** Whether every third-party package of the previous lockfile is in this checkout's at the same version. */
async function sameDependencies(r: Release): Promise<boolean> {
  type Lock = { packages: Record<string, { version?: string; link?: boolean }> };
  const old = (JSON.parse(git(["show", `${r.commit}:package-lock.json`])) as Lock).packages;
  const cur = (JSON.parse(await readFile(join(repoRoot, "package-lock.json"), "utf8")) as Lock).packages;
  for (const [key, entry] of Object.entries(old)) {
    if (key === "" || entry.link || (key.startsWith("packages/") && !key.includes("node_modules/"))) continue;
    if (!key.startsWith("node_modules/")) return false; // a workspace's own node_modules: install it
    if (key.startsWith("node_modules/@flotilla/")) continue;
    if (cur[key]?.version !== entry.version) return false;
  }
  return true;
}

/**
 * Builds the previous release from its commit into a temporary folder: `git archive` of the
 * commit; its dependencies linked from this checkout's node_modules when its lockfile pins the
 * same versions (our own @flotilla packages point into the folder), `npm ci` there otherwise;
 * then its scripts/build.mjs, so its bin/flotilla.js runs the bundle of that commit.
 */
/** The temporary folder of the build, removed after the tests even when the build failed. */
let buildDir: string | undefined;

async function buildPrevious(): Promise<Previous> {
  const r = await previousRelease();
  requireHistory(r);
  const dir = await mkdtemp(join(tmpdir(), `flotilla-skew-${r.version}-`));
  buildDir = dir;
  execFileSync("sh", ["-c", 'git -C "$1" archive "$2" | tar -x -C "$3"', "sh", repoRoot, r.commit, dir], { stdio: ["ignore", "ignore", "pipe"] });
  let dependencies: Previous["dependencies"];
  if (await sameDependencies(r)) {
    dependencies = "linked";
    const modules = join(repoRoot, "node_modules");
    await mkdir(join(dir, "node_modules", "@flotilla"), { recursive: true });
    for (const name of await readdir(modules)) {
      if (name !== "@flotilla") await symlink(await realpath(join(modules, name)), join(dir, "node_modules", name));
    }
    for (const name of await readdir(join(dir, "packages"))) {
      if (existsSync(join(dir, "packages", name, "package.json"))) await symlink(join("..", "..", "packages", name), join(dir, "node_modules", "@flotilla", name));
    }
  } else {
    dependencies = "npm ci";
    // Install scripts run: the coordinator's SQLite driver is a native module.
    execFileSync("npm", ["ci", "--no-audit", "--no-fund"], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  }
  execFileSync(process.execPath, ["scripts/build.mjs"], { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const bin = join(dir, "packages", "cli", "bin", "flotilla.js");
  const printed = execFileSync(process.execPath, [bin, "--version"], { encoding: "utf8" }).trim();
  if (printed !== r.version) throw new Error(`the build of commit ${r.commit} prints version ${printed}, not ${r.version} as releases.json says`);
  return { ...r, bin, dir, dependencies };
}

let previous: Previous | undefined;
const built = (): Previous => {
  if (!previous) throw new Error("the previous version was not built (see the error of beforeAll)");
  return previous;
};
beforeAll(async () => {
  previous = await buildPrevious();
}, 120_000);
afterAll(async () => {
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
});

const sb = useSandbox();

/** Publishes a bundle serving "1.0.0" on a fresh port, deploys it to `device`, waits for it healthy and serving. */
async function installBundle(fleet: Fleet, device: string): Promise<void> {
  const port = await freePort();
  const { path } = await bundleTarball(await sb.dir(), "app.tar.gz", { port });
  await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
  const deploy = await fleet.admin(["device", "deploy", device, "app@1.0.0"]);
  expect(deploy.code, deploy.stderr).toBe(0);
  const steps = await waitForEnd(fleet, device, "app/1/app.tar.gz");
  expect(steps.at(-1)!.step, JSON.stringify(steps)).toBe("healthy");
  expect(await served(port)).toBe("1.0.0");
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("version skew with the previous released version", () => {
  it("an agent of the previous version enrolls with, connects to and installs a bundle from the current coordinator; an agent release is refused for it with the reason", async () => {
    const p = built();
    const fleet = await signedFleet(sb);
    fleet.bins.agent = p.bin;
    const { name } = await bundleAgent(fleet, sb);

    const device = (await fleet.device(name))!;
    expect(device.agentVersion).toBe(p.version);
    const ls = await fleet.admin(["device", "ls"]);
    expect(ls.stdout).toMatch(new RegExp(`^${escape(name)}\\s+online\\s+${escape(p.version)}\\s`, "m"));

    await installBundle(fleet, name);

    // What the old agent cannot do is refused for it alone, with the reason: a rollout of an agent
    // release plans a (simulated) device that declares release:agent and lists the old agent as
    // ineligible.
    const label = await fleet.admin(["device", "label", "set", name, "env=prod"]);
    expect(label.code, label.stderr).toBe(0);
    await swarmOf(fleet, sb, [{ hostname: "sw-00", capabilities: ["release:bundle", "release:agent"] }]);
    await waitFor("sw-00 online", async () => (await fleet.device("sw-00"))?.status === "online", 30_000, 250);
    const { path } = await artifact(await sb.dir(), "flotilla-linux-x86_64", 1000);
    await createRelease(fleet, path, "flotilla-agent", "9.9.9", ["--kind", "agent"]);
    const plan = await fleet.adminJson<PlanJson>(["rollout", "plan", "flotilla-agent@9.9.9", "--selector", "env=prod"]);
    expect(plan.waves.flatMap((w) => w.devices.map((d) => d.name))).toEqual(["sw-00"]);
    expect(plan.ineligible.map((d) => [d.name, d.reason])).toEqual([
      [name, "missing capability release:agent: this agent cannot update itself (it runs without self_update, or is older than self-update)"],
    ]);
    const deploy = await fleet.admin(["device", "deploy", name, "flotilla-agent@9.9.9"]);
    expect(deploy.code).not.toBe(0);
    expect(deploy.stderr).toMatch(new RegExp(`^error: device ${escape(name)} cannot activate agent releases`, "m"));
  });

  it("a current agent enrolls with and installs a bundle from the previous coordinator, administered with the current CLI", async () => {
    const p = built();
    const fleet = new Fleet(sb);
    fleet.bins.coordinator = p.bin;
    await fleet.start();
    const key = await fleet.admin(["signing-key", "add"]);
    expect(key.code, key.stderr).toBe(0);
    const { name } = await bundleAgent(fleet, sb);

    expect((await fleet.device(name))!.agentVersion).toBe(VERSION);
    await installBundle(fleet, name);
  });
});
