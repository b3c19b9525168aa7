import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { readFile, stat, statfs } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { commonv1 } from "@flotilla/protocol/agent";

/** What collectFacts needs besides the machine itself. */
export interface CollectFactsOptions {
  agentVersion: string;
  /** What this agent can do, e.g. "bundle", "nixos". */
  capabilities: string[];
  /** Prefix for /etc/os-release, /proc and /run/current-system, for tests. Default "/". */
  root?: string;
}

/** Filesystems that hold real data; everything else in /proc/mounts is virtual or a network share. */
const DISK_FS_TYPES = new Set([
  "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "zfs", "f2fs",
  "vfat", "exfat", "ntfs", "ntfs3", "jfs", "reiserfs",
]);

/**
 * Describes this machine. Every source may be missing or unreadable (containers, minimal
 * systems): what cannot be read is left empty, never thrown. Costs a few small file reads and
 * one statfs per mounted disk.
 */
export async function collectFacts(opts: CollectFactsOptions): Promise<commonv1.Facts> {
  const root = opts.root ?? "/";
  const [osRelease, disks, nixosVersionFile] = await Promise.all([
    readOsRelease(root),
    readDisks(root),
    readText(join(root, "run/current-system/nixos-version")),
  ]);
  const id = osRelease.get("ID") ?? "";
  const nixosVersion =
    nixosVersionFile?.trim() || (id === "nixos" ? osRelease.get("BUILD_ID") || osRelease.get("VERSION_ID") || "" : "");
  const cpus = safe(() => os.cpus(), []);
  const uptimeSeconds = safe(() => os.uptime(), 0);
  return create(commonv1.FactsSchema, {
    hostname: safe(() => os.hostname(), ""),
    os: id,
    osVersion: osRelease.get("VERSION_ID") ?? "",
    osPrettyName: osRelease.get("PRETTY_NAME") ?? "",
    kernel: safe(() => os.release(), ""),
    arch: safe(() => os.machine(), ""),
    cpuModel: cpus[0]?.model.trim() ?? "",
    cpuCount: cpus.length || safe(() => os.availableParallelism(), 0),
    memoryBytes: BigInt(safe(() => os.totalmem(), 0)),
    disks,
    interfaces: readInterfaces(),
    nixosVersion,
    agentVersion: opts.agentVersion,
    capabilities: [...opts.capabilities],
    // Whole seconds, so that two collections agree despite the clock moving between calls.
    bootTime: uptimeSeconds > 0 ? timestampFromMs(Math.round((Date.now() - uptimeSeconds * 1000) / 1000) * 1000) : undefined,
  });
}

async function readOsRelease(root: string): Promise<Map<string, string>> {
  const text =
    (await readText(join(root, "etc/os-release"))) ?? (await readText(join(root, "usr/lib/os-release"))) ?? "";
  return parseOsRelease(text);
}

/** os-release(5): KEY=value lines, values optionally quoted shell-style. */
function parseOsRelease(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    out.set(m[1]!, unquote(m[2]!.trim()));
  }
  return out;
}

function unquote(value: string): string {
  const q = value[0];
  if ((q === '"' || q === "'") && value.length >= 2 && value.endsWith(q)) {
    const inner = value.slice(1, -1);
    return q === '"' ? inner.replace(/\\([$"\\`])/g, "$1") : inner;
  }
  return value;
}

async function readDisks(root: string): Promise<commonv1.Disk[]> {
  const text = (await readText(join(root, "proc/mounts"))) ?? "";
  // A later mount on the same point hides the earlier one.
  const byMount = new Map<string, { device: string; fsType: string }>();
  for (const line of text.split("\n")) {
    const [device, mount, fsType] = line.split(" ").map(unescapeMountField);
    if (!device || !mount || !fsType) continue;
    byMount.set(mount, { device, fsType });
  }
  const candidates = [...byMount]
    // overlay is the root filesystem of most containers; anywhere else it is a container's layer.
    .filter(([mount, m]) => DISK_FS_TYPES.has(m.fsType) || (m.fsType === "overlay" && mount === "/"))
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const disks = await Promise.all(
    candidates.map(async ([mount, m]) => {
      const path = join(root, mount);
      try {
        // Containers bind-mount single files (/etc/hosts) from the host's disk: not disks.
        if (!(await stat(path)).isDirectory()) return undefined;
        const s = await statfs(path, { bigint: true });
        return create(commonv1.DiskSchema, {
          mount,
          device: m.device,
          fsType: m.fsType,
          totalBytes: s.blocks * s.bsize,
          freeBytes: s.bavail * s.bsize,
        });
      } catch {
        return undefined;
      }
    }),
  );
  return disks.filter((d) => d !== undefined);
}

/** /proc/mounts writes space, tab, newline and backslash as octal escapes (\040 ...). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

function readInterfaces(): commonv1.NetworkInterface[] {
  const all = safe(() => os.networkInterfaces(), {});
  const out: commonv1.NetworkInterface[] = [];
  for (const name of Object.keys(all).sort()) {
    const addrs = (all[name] ?? []).filter((a) => !a.internal);
    if (addrs.length === 0) continue;
    const mac = addrs.find((a) => a.mac !== "00:00:00:00:00:00")?.mac ?? "";
    out.push(
      create(commonv1.NetworkInterfaceSchema, {
        name,
        mac,
        addresses: addrs.map((a) => a.cidr ?? a.address),
      }),
    );
  }
  return out;
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
}

function safe<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}
