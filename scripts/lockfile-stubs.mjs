// The package registry these machines reach does not carry every platform build of every
// package (e.g. @rollup/rollup-darwin-x64), so npm cannot record them in package-lock.json and
// `npm ci` then refuses the lock as out of sync. This adds, for each optional platform package
// a locked package declares but the lock lacks, an entry with its version and os/cpu, which
// npm skips on every other platform. Run after `npm install` changes the lock.
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8"));
const packages = lock.packages;
const osNames = ["darwin", "linux", "win32", "freebsd", "openbsd", "netbsd", "sunos", "aix", "android", "openharmony"];
const cpuNames = ["x64", "arm64", "arm", "ia32", "ppc64", "s390x", "riscv64", "loong64", "mips64el", "armv7", "aarch64"];
let added = 0;

for (const [where, pkg] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`;
    if (packages[key] || packages[`${where}/node_modules/${name}`]) continue;
    const parts = name.split(/[/-]/);
    const os = osNames.filter((o) => parts.includes(o));
    const cpu = cpuNames.filter((c) => parts.includes(c)).map((c) => (c === "aarch64" ? "arm64" : c === "armv7" ? "arm" : c));
    if (os.length === 0) continue; // not a platform build: leave it to npm
    packages[key] = { version, optional: true, ...(pkg.dev ? { dev: true } : {}), os, ...(cpu.length ? { cpu } : {}) };
    added++;
  }
}
writeFileSync(path, JSON.stringify(lock, null, 2) + "\n");
console.log(`lockfile-stubs: added ${added} platform entries`);
