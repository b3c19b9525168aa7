/** Real OpenSSH for the tests: an sshd on a loopback port, and a private ssh-agent. */
import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { userInfo } from "node:os";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import type { Sandbox } from "./sandbox.ts";

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
  const sshd = sb.adopt(child, "sshd");
  await sshd.waitForOutput(/Server listening on 127\.0\.0\.1 port/, 30_000);
  return { port, identity: join(dir, "id"), knownHosts: join(dir, "known_hosts"), user: userInfo().username };
}

/**
 * A private ssh-agent holding the private key files `keys`, killed at cleanup; returns its
 * socket, for SSH_AUTH_SOCK.
 */
export async function startSshAgent(sb: Sandbox, keys: string[]): Promise<string> {
  const sock = join(await sb.dir("flotilla-ssh-agent-"), "agent.sock");
  const agent = sb.adopt(spawn("ssh-agent", ["-D", "-a", sock], { stdio: ["ignore", "pipe", "pipe"] }), "ssh-agent");
  await waitFor("ssh-agent listening", () => {
    if (agent.exitCode !== null) throw new Error(`ssh-agent exited with ${agent.exitCode}: ${agent.output}`);
    return existsSync(sock);
  });
  for (const key of keys) execFileSync("ssh-add", ["-q", key], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: "ignore" });
  return sock;
}
