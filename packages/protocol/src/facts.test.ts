import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { factsFingerprint, flattenFacts } from "./facts.ts";
import { matchesSelector, parseSelector } from "./selector/selector.ts";
import { FactsSchema, type Facts } from "./gen/flotilla/common/v1/common_pb.ts";

function sample(): Facts {
  return create(FactsSchema, {
    hostname: "web-1",
    os: "nixos",
    osVersion: "24.05",
    osPrettyName: "NixOS 24.05 (Uakari)",
    kernel: "6.6.30",
    arch: "x86_64",
    cpuModel: "AMD EPYC 7B13",
    cpuCount: 8,
    memoryBytes: 16_000_000_000n,
    disks: [
      { mount: "/", device: "/dev/sda1", fsType: "ext4", totalBytes: 100n, freeBytes: 40n },
      { mount: "/boot", device: "/dev/sda2", fsType: "vfat", totalBytes: 10n, freeBytes: 5n },
    ],
    interfaces: [{ name: "eth0", mac: "52:54:00:12:34:56", addresses: ["10.0.0.5/24", "fe80::1/64"] }],
    nixosVersion: "24.05.20240601.abcdef",
    agentVersion: "0.1.0",
    capabilities: ["bundle", "nixos"],
    bootTime: timestampFromMs(1_700_000_000_000),
  });
}

describe("flattenFacts", () => {
  it("lets `agent.version!=V` select the agents that are not on V, and those that report no version", () => {
    const outdated = parseSelector("agent.version!=0.2.0");
    expect(matchesSelector(outdated, flattenFacts(sample()))).toBe(true);
    expect(matchesSelector(outdated, flattenFacts({ ...sample(), agentVersion: "0.2.0" }))).toBe(false);
    expect(matchesSelector(outdated, flattenFacts({ ...sample(), agentVersion: "" }))).toBe(true);
    expect(matchesSelector(parseSelector("capabilities!=x,agent.version in (0.1.0,0.2.0)"), flattenFacts(sample()))).toBe(true);
  });

  it("flattens every fact into a dotted key", () => {
    expect(flattenFacts(sample())).toEqual({
      hostname: "web-1",
      os: "nixos",
      "os.version": "24.05",
      "os.name": "NixOS 24.05 (Uakari)",
      kernel: "6.6.30",
      arch: "x86_64",
      "cpu.model": "AMD EPYC 7B13",
      "cpu.count": "8",
      "memory.bytes": "16000000000",
      "nixos.version": "24.05.20240601.abcdef",
      "agent.version": "0.1.0",
      capabilities: "bundle,nixos",
      "disk.0.mount": "/",
      "disk.0.fs": "ext4",
      "disk.0.total_bytes": "100",
      "disk.0.free_bytes": "40",
      "disk.1.mount": "/boot",
      "disk.1.fs": "vfat",
      "disk.1.total_bytes": "10",
      "disk.1.free_bytes": "5",
      "net.eth0.mac": "52:54:00:12:34:56",
      "net.eth0.addresses": "10.0.0.5/24,fe80::1/64",
    });
  });

  it("leaves out empty strings and unknown sizes", () => {
    const facts = create(FactsSchema, {
      hostname: "bare",
      interfaces: [{ name: "wg0", mac: "", addresses: [] }],
    });
    expect(flattenFacts(facts)).toEqual({ hostname: "bare" });
  });

  it("returns nothing for empty facts", () => {
    expect(flattenFacts(create(FactsSchema))).toEqual({});
  });
});

describe("factsFingerprint", () => {
  it("is a sha256 hex digest that is equal for equal facts", () => {
    const fp = factsFingerprint(sample());
    expect(fp).toMatch(/^[0-9a-f]{64}$/);
    expect(factsFingerprint(sample())).toBe(fp);
  });

  it("ignores free disk bytes and boot time", () => {
    const changed = sample();
    changed.disks[0]!.freeBytes = 1n;
    changed.bootTime = timestampFromMs(1_800_000_000_000);
    expect(factsFingerprint(changed)).toBe(factsFingerprint(sample()));
  });

  it("does not modify the facts it hashes", () => {
    const facts = sample();
    factsFingerprint(facts);
    expect(facts).toEqual(sample());
  });

  it("changes when a real fact changes", () => {
    const base = factsFingerprint(sample());
    const cases: Array<(f: Facts) => void> = [
      (f) => (f.hostname = "web-2"),
      (f) => (f.kernel = "6.6.31"),
      (f) => (f.disks[0]!.totalBytes = 200n),
      (f) => f.disks.pop(),
      (f) => f.interfaces[0]!.addresses.push("10.0.0.6/24"),
      (f) => f.capabilities.push("tunnel"),
      (f) => (f.nixosVersion = ""),
    ];
    for (const change of cases) {
      const facts = sample();
      change(facts);
      expect(factsFingerprint(facts)).not.toBe(base);
    }
  });
});
