/** The arguments of `flotilla tunnel`, `ssh` and `port-forward`: ports, mappings, the ssh command line. */
import { UsageError } from "../errors.ts";

/** A TCP port, 1 to 65535; `what` names it in the error. */
export function parsePort(text: string, what = "port"): number {
  const n = Number(text);
  if (!/^\d{1,5}$/.test(text) || n < 1 || n > 65535) throw new UsageError(`invalid ${what} ${JSON.stringify(text)}: expected 1 to 65535`);
  return n;
}

/** A port-forward mapping: LOCAL:REMOTE, or REMOTE alone (same local port); LOCAL 0 picks a free one. */
export interface Mapping {
  local: number;
  remote: number;
}

export function parseMapping(text: string): Mapping {
  const m = /^(?:(\d{1,5}):)?(\d{1,5})$/.exec(text);
  if (!m) throw new UsageError(`invalid mapping ${JSON.stringify(text)}: expected LOCAL:REMOTE, e.g. 8080:80`);
  const remote = parsePort(m[2]!, "device port");
  const local = m[1] === undefined ? remote : m[1] === "0" ? 0 : parsePort(m[1], "local port");
  return { local, remote };
}

/** Quotes one word for the POSIX shell ssh runs ProxyCommand with, and escapes ssh's % tokens. */
export function proxyWord(word: string): string {
  return `'${word.replace(/'/g, `'\\''`).replace(/%/g, "%%")}'`;
}

/**
 * The ssh arguments `flotilla ssh` runs: this same flotilla program as ProxyCommand (with the
 * coordinator, key and organization spelled out, so it works under ssh's environment), the
 * device as HostKeyAlias, the destination, then the user's own arguments. OpenSSH reads
 * options after the destination too, so `-L ...` or `-i KEY` there work.
 */
export function sshArguments(opts: {
  self: string[];
  coordinator: string;
  keyFile?: string;
  org?: string;
  destination: string;
  port: number;
  extra: string[];
}): string[] {
  const device = opts.destination.slice(opts.destination.lastIndexOf("@") + 1);
  const proxy = [
    ...opts.self,
    "--coordinator",
    opts.coordinator,
    ...(opts.keyFile ? ["--key", opts.keyFile] : []),
    ...(opts.org ? ["--org", opts.org] : []),
    "tunnel",
    device,
    "--port",
    String(opts.port),
  ];
  return ["-o", `ProxyCommand=${proxy.map(proxyWord).join(" ")}`, "-o", `HostKeyAlias=${device}`, opts.destination, ...opts.extra];
}
