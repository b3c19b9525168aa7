import { timestampMs } from "@bufbuild/protobuf/wkt";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { collectFacts } from "./collect.ts";

const root = useTempDir("flotilla-facts-");

async function put(path: string, text: string): Promise<void> {
  await mkdir(join(root.path, path, ".."), { recursive: true });
  await writeFile(join(root.path, path), text);
}

const DEBIAN = `PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
ID=debian
`;

describe("collectFacts", () => {
  it("reads the machine from the os module and the os-release file", async () => {
    await put("etc/os-release", DEBIAN);
    const facts = await collectFacts({ agentVersion: "1.2.3", capabilities: ["bundle", "tunnel"], root: root.path });
    expect(facts.hostname).toBe(os.hostname());
    expect(facts.os).toBe("debian");
    expect(facts.osVersion).toBe("12");
    expect(facts.osPrettyName).toBe("Debian GNU/Linux 12 (bookworm)");
    expect(facts.kernel).toBe(os.release());
    expect(facts.arch).toBe(os.machine());
    expect(facts.cpuCount).toBeGreaterThan(0);
    expect(facts.memoryBytes).toBe(BigInt(os.totalmem()));
    expect(facts.nixosVersion).toBe("");
    expect(facts.agentVersion).toBe("1.2.3");
    expect(facts.capabilities).toEqual(["bundle", "tunnel"]);
  });

  it("puts the boot time in the past, within a second of what uptime says", async () => {
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.bootTime).toBeDefined();
    const expected = Date.now() - os.uptime() * 1000;
    expect(Math.abs(timestampMs(facts.bootTime!) - expected)).toBeLessThan(2000);
  });

  it("falls back to /usr/lib/os-release and understands single quotes and escapes", async () => {
    await put("usr/lib/os-release", `ID='arch'\nPRETTY_NAME="Say \\"hi\\""\n# comment\n`);
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.os).toBe("arch");
    expect(facts.osPrettyName).toBe('Say "hi"');
    expect(facts.osVersion).toBe("");
  });

  it("leaves fields empty when os-release, mounts and nixos-version are all missing", async () => {
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.os).toBe("");
    expect(facts.osVersion).toBe("");
    expect(facts.osPrettyName).toBe("");
    expect(facts.nixosVersion).toBe("");
    expect(facts.disks).toEqual([]);
  });

  it("reads the NixOS version from the current system", async () => {
    await put("etc/os-release", 'ID=nixos\nVERSION_ID="24.05"\nBUILD_ID="24.05.20240601.abcdef"\n');
    await put("run/current-system/nixos-version", "24.05.20240602.fedcba\n");
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.nixosVersion).toBe("24.05.20240602.fedcba");
  });

  it("takes the NixOS version from os-release when the current system has none", async () => {
    await put("etc/os-release", 'ID=nixos\nVERSION_ID="24.05"\nBUILD_ID="24.05.20240601.abcdef"\n');
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.nixosVersion).toBe("24.05.20240601.abcdef");
  });

  it("lists real mounted filesystems with their sizes and skips pseudo filesystems", async () => {
    await mkdir(join(root.path, "boot"));
    await mkdir(join(root.path, "srv/my data"), { recursive: true });
    await mkdir(join(root.path, "var/lib/docker/overlay2/x/merged"), { recursive: true });
    await put("etc/hosts", "127.0.0.1 localhost\n");
    await put(
      "proc/mounts",
      [
        "proc /proc proc rw,relatime 0 0",
        "sysfs /sys sysfs rw,relatime 0 0",
        "tmpfs /run tmpfs rw 0 0",
        "/dev/sda1 / ext4 rw,relatime 0 0",
        "/dev/sda2 /boot vfat rw 0 0",
        "/dev/sdb1 /srv/my\\040data xfs rw 0 0",
        "overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0",
        "/dev/sda1 /etc/hosts ext4 rw 0 0",
        "/dev/sdc1 /gone btrfs rw 0 0",
        "server:/export /nfs nfs4 rw 0 0",
        "",
      ].join("\n"),
    );
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.disks.map((d) => [d.mount, d.device, d.fsType])).toEqual([
      ["/", "/dev/sda1", "ext4"],
      ["/boot", "/dev/sda2", "vfat"],
      ["/srv/my data", "/dev/sdb1", "xfs"],
    ]);
    for (const disk of facts.disks) {
      expect(disk.totalBytes).toBeGreaterThan(0n);
      expect(disk.freeBytes).toBeLessThanOrEqual(disk.totalBytes);
    }
  });

  it("keeps an overlay root filesystem, as containers have", async () => {
    await put("proc/mounts", "overlay / overlay rw,lowerdir=/a,upperdir=/b 0 0\n");
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.disks.map((d) => [d.mount, d.fsType])).toEqual([["/", "overlay"]]);
  });

  it("describes only the filesystem mounted last on a mount point", async () => {
    await put("proc/mounts", "/dev/sda1 / ext4 rw 0 0\n/dev/sdb1 / btrfs rw 0 0\n");
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    expect(facts.disks.map((d) => [d.device, d.fsType])).toEqual([["/dev/sdb1", "btrfs"]]);
  });

  it("lists network interfaces other than loopback, with MAC and addresses", async () => {
    const facts = await collectFacts({ agentVersion: "1", capabilities: [], root: root.path });
    const names = facts.interfaces.map((i) => i.name);
    expect(names).not.toContain("lo");
    const external = Object.entries(os.networkInterfaces()).filter(([, addrs]) => addrs?.some((a) => !a.internal));
    expect(names).toEqual(external.map(([name]) => name).sort());
    for (const nic of facts.interfaces) {
      const addrs = (os.networkInterfaces()[nic.name] ?? []).filter((a) => !a.internal);
      expect(nic.addresses).toEqual(addrs.map((a) => a.cidr ?? a.address));
      expect(nic.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$|^$/);
    }
  });
});
