/** Helpers for the tunnel end-to-end tests: a fleet with one tunnel-enabled agent, and a real sshd. */
import { execFileSync, spawn } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { Fleet, freePort, Proc, waitFor, type DeviceJson, type Sandbox } from "./harness.ts";

/** A coordinator, its owner logged in, and one approved agent allowing `ports`. */
export async function tunnelFleet(sb: Sandbox, ports: string): Promise<{ fleet: Fleet; agent: Proc; device: DeviceJson; stateDir: string }> {
  const fleet = await new Fleet(sb).start();
  const stateDir = await sb.dir("flotilla-agent-");
  const agent = fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]), ["--tunnel-ports", ports]);
  const device = await waitFor(
    "the device online with the tunnel capability",
    async () => {
      const d = (await fleet.devices())[0] as (DeviceJson & { capabilities?: string[] }) | undefined;
      return d?.status === "online" && d.capabilities?.includes("tunnel") ? d : undefined;
    },
    60_000,
  );
  return { fleet, agent, device, stateDir };
}

/** A real OpenSSH server on a loopback port, as the current user, with its own keys and config. */
export interface Sshd {
  port: number;
  /** The client's private key, authorized on this server. */
  identity: string;
  knownHosts: string;
  user: string;
}

export async function startSshd(sb: Sandbox): Promise<Sshd> {
  const dir = await sb.dir("flotilla-sshd-");
  const port = await freePort();
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "id")]);
  await writeFile(join(dir, "authorized_keys"), await readFile(join(dir, "id.pub")));
  await writeFile(
    join(dir, "sshd_config"),
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${join(dir, "host_key")}`,
      `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      "UsePAM no",
      "StrictModes no",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "PubkeyAuthentication yes",
      "PermitRootLogin prohibit-password",
      "LogLevel VERBOSE",
      "",
    ].join("\n"),
  );
  // As root, sshd insists on its privilege separation directory, which a fresh container lacks.
  if (process.getuid?.() === 0) await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const child = spawn("/usr/sbin/sshd", ["-D", "-e", "-f", join(dir, "sshd_config")], { stdio: ["ignore", "pipe", "pipe"] });
  const sshd = new Proc(child, "sshd");
  sb.procs.push(sshd);
  await sshd.waitForOutput(/Server listening on 127\.0\.0\.1 port/, 30_000);
  return { port, identity: join(dir, "id"), knownHosts: join(dir, "known_hosts"), user: userInfo().username };
}

/** The audit entries of one action, newest last. */
export async function auditEntries(fleet: Fleet, action: string): Promise<{ actor: string; target: string; outcome: string; detail: string }[]> {
  const all = await fleet.adminJson<{ actor: string; action: string; target: string; outcome: string; detail: string }[]>(["audit", "ls"]);
  return all.filter((e) => e.action === action);
}
