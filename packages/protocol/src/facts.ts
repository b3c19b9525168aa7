import { createHash } from "node:crypto";
import { clone, toBinary } from "@bufbuild/protobuf";
import { FactsSchema, type Facts } from "./gen/flotilla/common/v1/common_pb.ts";

/**
 * Flattens facts into the string map that selectors match and the CLI shows: `hostname`, `os`,
 * `os.version`, `os.name`, `kernel`, `arch`, `cpu.model`, `cpu.count`, `memory.bytes`,
 * `nixos.version`, `agent.version`, `capabilities` (comma-joined),
 * `disk.<i>.mount|fs|total_bytes|free_bytes` and `net.<name>.mac|addresses` (comma-joined).
 * Empty strings are left out, and so are a zero CPU count and memory size (unknown, not zero).
 */
export function flattenFacts(facts: Facts): Record<string, string> {
  const out: Record<string, string> = {};
  const put = (key: string, value: string) => {
    if (value !== "") out[key] = value;
  };
  put("hostname", facts.hostname);
  put("os", facts.os);
  put("os.version", facts.osVersion);
  put("os.name", facts.osPrettyName);
  put("kernel", facts.kernel);
  put("arch", facts.arch);
  put("cpu.model", facts.cpuModel);
  if (facts.cpuCount > 0) put("cpu.count", String(facts.cpuCount));
  if (facts.memoryBytes > 0n) put("memory.bytes", String(facts.memoryBytes));
  put("nixos.version", facts.nixosVersion);
  put("agent.version", facts.agentVersion);
  put("capabilities", facts.capabilities.join(","));
  facts.disks.forEach((disk, i) => {
    put(`disk.${i}.mount`, disk.mount);
    put(`disk.${i}.fs`, disk.fsType);
    put(`disk.${i}.total_bytes`, String(disk.totalBytes));
    put(`disk.${i}.free_bytes`, String(disk.freeBytes));
  });
  for (const nic of facts.interfaces) {
    put(`net.${nic.name}.mac`, nic.mac);
    put(`net.${nic.name}.addresses`, nic.addresses.join(","));
  }
  return out;
}

/**
 * A sha256 hex digest of the facts that ignores what changes all the time (free disk bytes,
 * boot time), so the agent re-sends facts only when something real changed. Stable for equal
 * facts: protobuf-es writes fields in field-number order and there are no map fields.
 */
export function factsFingerprint(facts: Facts): string {
  const stable = clone(FactsSchema, facts);
  stable.bootTime = undefined;
  for (const disk of stable.disks) disk.freeBytes = 0n;
  const bytes = toBinary(FactsSchema, stable, { writeUnknownFields: false });
  return createHash("sha256").update(bytes).digest("hex");
}
