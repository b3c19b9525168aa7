/**
 * The artifacts people install (`npm run package`, docs/install.md), used as a user would on
 * this machine: the .deb installed with dpkg, its agent unit's ExecStart run with the unit's
 * environment (CI machines have no systemd as PID 1), the coordinator's /install.sh piped to sh,
 * and the NixOS module parsed by Nix.
 *
 * The artifacts are built once for the file: CI builds them all before the tests and names the
 * folder in FLOTILLA_TEST_DIST (.ci/run); otherwise beforeAll builds them (three minutes or
 * more; the first time also cross-compiles the aarch64 SQLite addon) into a temporary folder.
 * The tests run on an x86_64 machine; the aarch64 executable runs under qemu-aarch64.
 */
import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, chown, copyFile, mkdir, readFile, readdir, realpath, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { freePort, waitFor, type Proc } from "@flotilla/protocol/testing";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { signedFleet } from "./support/releases.ts";
import { start, waitForStatus } from "./support/rollouts.ts";
import { repoRoot, Sandbox } from "./support/sandbox.ts";

const run = promisify(execFile);
const version = (JSON.parse(await readFile(join(repoRoot, "package.json"), "utf8")) as { version: string }).version;
/** A PATH with the system's tools but no node (Debian keeps node in /usr/bin). */
const NO_NODE_PATH = "/usr/sbin";

const sb = new Sandbox();
let dist = "";
let fleet: Fleet;

beforeAll(async () => {
  expect(process.getuid?.(), "dpkg -i needs root").toBe(0);
  expect(existsSync(join(NO_NODE_PATH, "node"))).toBe(false);
  dist = process.env.FLOTILLA_TEST_DIST ?? "";
  if (!dist) {
    dist = await sb.dir("flotilla-dist-");
    await run(process.execPath, [join(repoRoot, "scripts/package.mjs"), "--out", dist], { maxBuffer: 1 << 24 });
  }
  // Signed: the installed agent updates itself through agent releases below.
  fleet = await signedFleet(sb, ["--install-dir", dist]);
}, 600_000);

afterAll(async () => {
  await run("dpkg", ["--purge", "flotilla"]).catch(() => undefined);
  await sb.cleanup();
});

/** The settings of a unit's [Service] section that running it needs. */
interface Unit {
  execStart: string[];
  environmentFiles: string[];
  environment: Record<string, string>;
  user?: string;
  stateDirectory?: string;
  text: string;
}

function parseUnit(text: string): Unit {
  const unit: Unit = { execStart: [], environmentFiles: [], environment: {}, text };
  for (const line of text.split("\n")) {
    const m = /^(\w+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    const [, key, value] = m as unknown as [string, string, string];
    if (key === "ExecStart") unit.execStart = value.split(/\s+/);
    if (key === "EnvironmentFile") unit.environmentFiles.push(value);
    if (key === "Environment") for (const kv of value.split(/\s+/)) unit.environment[kv.split("=")[0]!] = kv.slice(kv.indexOf("=") + 1);
    if (key === "User") unit.user = value;
    if (key === "StateDirectory") unit.stateDirectory = value;
  }
  return unit;
}

/** KEY=VALUE lines of an EnvironmentFile. */
async function readEnvironmentFile(path: string): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const line of (await readFile(path, "utf8")).split("\n")) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) env[m[1]!] = m[2]!;
  }
  return env;
}

/**
 * Starts a unit the way systemd would: its ExecStart with ${STATE_DIRECTORY} filled in, its
 * Environment= and EnvironmentFile= variables and nothing of the test's environment but a PATH
 * without node, as `as` (root by default). `paths` maps the unit's absolute paths to where the
 * test put them.
 */
async function startUnit(
  unit: Unit,
  stateDirectory: string,
  paths: Record<string, string>,
  label: string,
  as: { uid: number; gid: number } = { uid: 0, gid: 0 },
): Promise<Proc> {
  const mapPath = (s: string) => Object.entries(paths).reduce((acc, [from, to]) => (acc.startsWith(from) ? to + acc.slice(from.length) : acc), s);
  const env: Record<string, string> = { PATH: NO_NODE_PATH, STATE_DIRECTORY: stateDirectory, ...unit.environment };
  for (const f of unit.environmentFiles) {
    const optional = f.startsWith("-");
    const path = mapPath(optional ? f.slice(1) : f);
    if (optional && !existsSync(path)) continue;
    Object.assign(env, await readEnvironmentFile(path));
  }
  const [exe, ...args] = unit.execStart.map((a) => mapPath(a.replaceAll("${STATE_DIRECTORY}", stateDirectory)));
  return sb.adopt(spawn(exe!, args, { cwd: "/", env, stdio: ["ignore", "pipe", "pipe"], ...as }), label);
}

/** Fails unless no folder from `path` up to / has a node_modules. */
function expectNoNodeModulesAbove(path: string): void {
  for (let d = dirname(path); ; d = dirname(d)) {
    expect(existsSync(join(d, "node_modules")), `${d}/node_modules`).toBe(false);
    if (d === "/") break;
  }
}

async function waitOnline(name: string): Promise<void> {
  await waitFor(`device ${name} online`, async () => (await fleet.device(name))?.status === "online", 30_000);
}

it("npm run package names each artifact with the version and the architecture, and SHA256SUMS matches them", async () => {
  const sums = (await readFile(join(dist, "SHA256SUMS"), "utf8")).trim().split("\n");
  const names = sums.map((l) => l.split("  ")[1]!);
  expect(names).toContain(`flotilla-${version}-linux-x86_64`);
  expect(names).toContain(`flotilla_${version}_amd64.deb`);
  for (const name of names) expect(name).toMatch(new RegExp(`^flotilla[-_]${version.replaceAll(".", "\\.")}[-_](linux-(x86_64|aarch64)|(amd64|arm64)\\.deb)$`));
  expect((await readdir(dist)).filter((f) => !f.startsWith(".")).sort()).toEqual([...names, "SHA256SUMS"].sort());
  for (const line of sums) {
    const [sum, name] = line.split("  ");
    expect(createHash("sha256").update(await readFile(join(dist, name!))).digest("hex"), name).toBe(sum);
  }
  const printed = await run(join(dist, `flotilla-${version}-linux-x86_64`), ["--version"], { env: { PATH: NO_NODE_PATH } });
  expect(printed.stdout.trim()).toBe(version);
});

it("the aarch64 executable runs under qemu-aarch64: it prints its version and its coordinator opens SQLite with the cross-compiled addon inside it", async () => {
  const exe = join(dist, `flotilla-${version}-linux-aarch64`);
  const libc = ["-L", "/usr/aarch64-linux-gnu"];
  // qemu from the test's PATH; the executable gets one without node.
  const qemu = (process.env.PATH ?? "").split(":").map((d) => join(d, "qemu-aarch64")).find(existsSync);
  if (!qemu) throw new Error("qemu-aarch64 is not installed (apt-get install qemu-user; .ci/run does)");
  expect((await run(qemu, [...libc, exe, "--version"], { env: { PATH: NO_NODE_PATH } })).stdout.trim()).toBe(version);
  const data = await sb.dir("flotilla-arm-coord-");
  const port = await freePort();
  const coordinator = sb.adopt(
    spawn(qemu, [...libc, exe, "coordinator", "--data-dir", data, "--listen", `127.0.0.1:${port}`], { env: { PATH: NO_NODE_PATH }, stdio: ["ignore", "pipe", "pipe"] }),
    "aarch64 coordinator",
  );
  await coordinator.waitForOutput(new RegExp(`listening on http://127\\.0\\.0\\.1:${port}`), 120_000);
  expect(coordinator.output).toMatch(/database=sqlite/);
  await coordinator.stop();
}, 180_000);

it("the .deb installs with dpkg -i, both units pass systemd-analyze verify, its coordinator runs on SQLite as an unprivileged user, its agent enrolls with the join string from /etc/flotilla/join and connects, and dpkg -r and --purge remove it cleanly", async () => {
  await run("dpkg", ["--purge", "flotilla"]).catch(() => undefined);
  await run("dpkg", ["-i", join(dist, `flotilla_${version}_amd64.deb`)]);
  expect((await run("/usr/bin/flotilla", ["--version"], { env: { PATH: NO_NODE_PATH } })).stdout.trim()).toBe(version);
  const agentUnit = "/lib/systemd/system/flotilla-agent.service";
  const coordinatorUnit = "/lib/systemd/system/flotilla-coordinator.service";
  const verify = await run("systemd-analyze", ["verify", agentUnit, coordinatorUnit]).then(
    (r) => ({ code: 0, stderr: r.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  expect(verify).toEqual({ code: 0, stderr: "" });
  // The installed executable, copied where no node_modules is above it (/usr/lib has one here),
  // under its installed name: a packaged coordinator serves /install.sh from its own directory.
  const binDir = await sb.dir("flotilla-bin-");
  await chmod(binDir, 0o755);
  const bin = join(binDir, "flotilla-linux-x86_64");
  await copyFile(await realpath("/usr/bin/flotilla"), bin);
  await chmod(bin, 0o755);
  expectNoNodeModulesAbove(bin);

  // The coordinator unit (DynamicUser=yes: here as nobody) runs on its embedded SQLite, the addon
  // coming from inside the executable, and serves its own executable to /install.sh.
  const coordUnit = parseUnit(await readFile(coordinatorUnit, "utf8"));
  expect(coordUnit.text).toMatch(/^DynamicUser=yes$/m);
  const coordState = await sb.dir("flotilla-coord-state-");
  await chmod(coordState, 0o700);
  await chown(coordState, 65534, 65534);
  const coordinator = await startUnit(coordUnit, coordState, { "/usr/bin/flotilla": bin }, "deb coordinator", { uid: 65534, gid: 65534 });
  const url = (await coordinator.waitForOutput(/listening on (\S+)/))[1]!;
  expect(coordinator.output).toMatch(/database=sqlite/);
  const script = await fetch(`${url}/install.sh`);
  expect(script.status).toBe(200);
  const digest = createHash("sha256").update(await readFile(bin)).digest("hex");
  expect(await script.text()).toContain(`arch=x86_64; sum='${digest}'`);
  await coordinator.stop();

  const unit = parseUnit(await readFile(agentUnit, "utf8"));
  expect(unit.user, "the agent unit runs as root").toBeUndefined();
  expect(unit.text).toMatch(/^Restart=always$/m);
  expect(unit.stateDirectory).toBe("flotilla-agent");
  expect(unit.execStart).toContain("/etc/flotilla/agent.toml");
  expect(unit.environmentFiles).toEqual(["-/etc/flotilla/join"]);
  // The agent's V8 flags (packages/protocol/src/agent-flags.ts): the packaged agent runs with them.
  expect(unit.environment.NODE_OPTIONS).toBe("--max-semi-space-size=1");

  // The admin writes the join string, readable by root alone; systemd would create the state directory.
  const joinString = await fleet.joinToken(["--auto-approve", "--labels", "site=deb"]);
  await writeFile("/etc/flotilla/join", `FLOTILLA_JOIN=${joinString}\n`, { mode: 0o600 });
  await mkdir("/var/lib/flotilla-agent", { recursive: true, mode: 0o700 });
  const agent = await startUnit(unit, "/var/lib/flotilla-agent", { "/usr/bin/flotilla": bin }, "deb agent");
  const device = await waitFor("the enrolled device", async () => (await fleet.devices("site=deb"))[0], 30_000);
  await waitOnline(device.id);
  expect(device.agentVersion).toBe(version);
  expect((await readdir("/var/lib/flotilla-agent")).length).toBeGreaterThan(0);
  await agent.stop();

  await run("dpkg", ["-r", "flotilla"]);
  expect(existsSync("/usr/bin/flotilla")).toBe(false);
  expect(existsSync("/usr/lib/flotilla")).toBe(false);
  expect(existsSync(agentUnit)).toBe(false);
  expect(existsSync("/etc/flotilla/agent.toml"), "removal keeps the configuration").toBe(true);
  await run("dpkg", ["--purge", "flotilla"]);
  for (const left of ["/etc/flotilla", "/var/lib/flotilla-agent", "/var/lib/flotilla-coordinator"]) expect(existsSync(left), left).toBe(false);
  const status = await run("dpkg-query", ["-W", "-f", "${db:Status-Status}", "flotilla"]).catch((e: { stdout: string }) => e);
  expect(status.stdout).not.toBe("installed");
}, 120_000);

it("curl <coordinator>/install.sh | sh installs an agent whose unit enrolls with the join string and connects, then updates itself through a rollout of the packaged executable and undoes a release that cannot start", async () => {
  const root = await sb.dir("flotilla-root-");
  const joinString = await fleet.joinToken(["--auto-approve", "--labels", "site=script"]);
  const installed = await run("sh", ["-c", `curl -fsSL ${fleet.url}/install.sh | sh -s -- --root "$ROOT" --join "$JOIN"`], {
    env: { PATH: "/usr/sbin:/usr/bin", ROOT: root, JOIN: joinString },
  });
  expect(installed.stdout).toContain(`flotilla ${version} installed in ${root}`);
  const joinFile = await stat(join(root, "etc/flotilla/join"));
  expect(joinFile.mode & 0o777).toBe(0o600);
  const unit = parseUnit(await readFile(join(root, "etc/systemd/system/flotilla-agent.service"), "utf8"));
  expect(unit.text).toMatch(/^Restart=always$/m);
  const bin = join(root, "usr/local/bin/flotilla");
  expectNoNodeModulesAbove(bin);
  const state = join(root, "var/lib/flotilla-agent");
  await mkdir(state, { recursive: true, mode: 0o700 });
  const agent = await startUnit(unit, state, { "/usr/local/bin/flotilla": bin, "/etc/flotilla": join(root, "etc/flotilla") }, "script agent");
  const device = await waitFor("the enrolled device", async () => (await fleet.devices("site=script"))[0], 30_000);
  await waitOnline(device.id);

  // The installed agent runs under the self-update launcher: an agent release of the packaged
  // executable is installed through a rollout and confirmed by the new agent reaching the
  // coordinator; a bad one (exits at start) is undone, and the device stays on a working agent.
  const launcher = async () => JSON.parse(await readFile(join(state, "agent-versions", "launcher.json"), "utf8")) as { current?: { version: string }; last?: { outcome: string } };
  const agentRelease = async (file: string, v: string) => {
    const r = await fleet.admin(["release", "create", file, "--name", "flotilla-agent", "--version", v, "--kind", "agent"]);
    expect(r.code, r.stderr).toBe(0);
    return start(fleet, [`flotilla-agent@${v}`, "--selector", "site=script", "--waves", "100%"]);
  };
  const good = await agentRelease(join(dist, `flotilla-${version}-linux-x86_64`), `${version}-repackaged`);
  const updated = await waitForStatus(fleet, good.id, "completed", 120_000);
  expect(updated.devices.map((d) => d.state)).toEqual(["healthy"]);
  expect(await launcher()).toMatchObject({ current: { version: `${version}-repackaged` }, last: { outcome: "healthy" } });
  await waitOnline(device.id);

  const broken = join(await sb.dir("flotilla-exe-"), "flotilla");
  await writeFile(broken, "#!/bin/sh\necho 'this agent cannot start' >&2\nexit 3\n", { mode: 0o755 });
  const bad = await agentRelease(broken, "broken");
  const refused = await waitForStatus(fleet, bad.id, "paused", 120_000);
  expect(refused.devices.map((d) => d.state)).toEqual(["rolled-back"]);
  expect(await launcher()).toMatchObject({ current: { version: `${version}-repackaged` }, last: { outcome: "rolled-back" } });
  await waitOnline(device.id);
  await agent.stop();
}, 300_000);

it("install.sh refuses a missing or malformed join string and a download whose SHA-256 differs, installing nothing", async () => {
  const root = await sb.dir("flotilla-root-");
  const script = await (await fetch(`${fleet.url}/install.sh`)).text();
  const sh = (args: string[], env: Record<string, string> = {}) =>
    new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn("sh", ["-s", "--", ...args], { env: { PATH: "/usr/sbin:/usr/bin", ...env }, stdio: ["pipe", "ignore", "pipe"] });
      let stderr = "";
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("close", (code) => resolve({ code, stderr }));
      child.stdin.end(env.SCRIPT ?? script);
    });
  expect(await sh(["--root", root])).toMatchObject({ code: 1, stderr: expect.stringMatching(/a join string is needed/) });
  expect(await sh(["--root", root, "--join", "flotilla-join-v1.x'; touch /tmp/owned #"])).toMatchObject({
    code: 1,
    stderr: expect.stringMatching(/not a join string/),
  });
  // A script whose recorded digest is not the executable's: the download is refused.
  const tampered = script.replace(/(arch=x86_64; sum=')[0-9a-f]{64}/, `$1${"0".repeat(64)}`);
  expect(tampered).not.toBe(script);
  const refused = await sh(["--root", root, "--join", "flotilla-join-v1.abc"], { SCRIPT: tampered });
  expect(refused.code).toBe(1);
  expect(refused.stderr).toMatch(/SHA-256 is [0-9a-f]{64}, not 0{64}: nothing installed/);
  expect(await readdir(join(root, "usr/local/bin"))).toEqual([]);
  expect(existsSync(join(root, "etc/flotilla/join"))).toBe(false);
});

it("a coordinator without an install directory answers /install.sh with 404 and how to configure one", async () => {
  const bare = await new Fleet(sb).start();
  for (const path of ["/install.sh", "/install/flotilla-linux-x86_64"]) {
    const r = await fetch(`${bare.url}${path}`);
    expect(r.status).toBe(404);
    expect(await r.text()).toMatch(/serves no agent installs: start it with --install-dir DIR/);
  }
  const other = await fetch(`${fleet.url}/install/flotilla-linux-mips`);
  expect(other.status).toBe(404);
  expect(await other.text()).toMatch(/no flotilla executable for mips/);
  await bare.coordinator.stop();
});

it("the NixOS module and default.nix parse", async () => {
  for (const file of ["nix/module.nix", "nix/package.nix", "default.nix", "flake.nix"]) {
    await run("nix-instantiate", ["--parse", join(repoRoot, file)]);
  }
});
