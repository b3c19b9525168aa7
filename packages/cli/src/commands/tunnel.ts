import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import net from "node:net";
import type { Command } from "commander";
import { createClient } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { adminTransport, targetUrl, type AdminTarget } from "../admin/client.ts";
import { describeError, UsageError } from "../errors.ts";
import { deviceStatus } from "./device.ts";
import { stopSignal, waitForAbort } from "./roles.ts";
import type { Run } from "./run.ts";
import { runTunnel, tunnelClient } from "./tunnel-stream.ts";

function parsePort(text: string, what = "port"): number {
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

export function registerTunnelCommands(program: Command, target: () => AdminTarget, run: Run): void {
  program
    .command("tunnel <device>")
    .description("connect stdin/stdout to a TCP port of a device, through the coordinator (an ssh ProxyCommand)")
    .option("--port <port>", "port on the device (it must be in its agent's --tunnel-ports)", "22")
    .action((device: string, opts: { port: string }) =>
      run(async () => {
        const port = parsePort(opts.port);
        const client = tunnelClient(await adminTransport(target()));
        const stop = stopSignal();
        // fd 1 as a file stream, so the device's eof closes it and the reader sees EOF.
        const output = createWriteStream("", { fd: 1 });
        try {
          await runTunnel(client, { device, port, input: process.stdin, output, signal: stop });
          await new Promise<void>((resolve) => (output.writableFinished ? resolve() : output.once("close", resolve)));
        } catch (err) {
          if (!stop.aborted) throw err;
        } finally {
          process.stdin.destroy();
        }
      }),
    );

  program
    .command("ssh <destination> [ssh-args...]")
    .description("run the system's ssh to a device through the coordinator; ssh options and a command go after --")
    .option("--port <port>", "sshd's port on the device", "22")
    .allowUnknownOption()
    .action((destination: string, extra: string[], opts: { port: string }) =>
      run(async () => {
        const t = target();
        const args = sshArguments({
          self: [process.execPath, process.argv[1] ?? "flotilla"],
          coordinator: await targetUrl(t),
          keyFile: t.keyFile,
          org: t.org,
          destination,
          port: parsePort(opts.port),
          extra,
        });
        // ssh owns the terminal: Ctrl-C is its to handle, and its exit code becomes ours.
        const ignore = () => {};
        process.on("SIGINT", ignore);
        try {
          return await new Promise<number>((resolve, reject) => {
            const child = spawn("ssh", args, { stdio: "inherit" });
            child.once("error", (err) => reject(new Error(`cannot run ssh: ${err.message}`)));
            child.once("exit", (code, signal) => resolve(code ?? (signal ? 128 + 2 : 1)));
          });
        } finally {
          process.off("SIGINT", ignore);
        }
      }),
    );

  program
    .command("port-forward <device> <mappings...>")
    .description("forward local ports to ports of a device, e.g. 8080:80 (http://localhost:8080 reaches port 80 on the device)")
    .option("--address <address>", "local address to listen on", "127.0.0.1")
    .action((device: string, specs: string[], opts: { address: string }) =>
      run(async (out) => {
        const mappings = specs.map(parseMapping);
        const transport = await adminTransport(target());
        const { device: found } = await createClient(adminv1.AdminService, transport).getDevice({ device });
        if (found && deviceStatus(found) !== "online") {
          throw new Error(`device ${found.name} is ${deviceStatus(found)}`);
        }
        const client = tunnelClient(transport);
        const stop = stopSignal();
        const open = new Set<Promise<void>>();
        const servers: net.Server[] = [];
        const closeAll = () => Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
        for (const { local, remote } of mappings) {
          const server = net.createServer({ allowHalfOpen: true }, (socket) => {
            const from = `${socket.remoteAddress}:${socket.remotePort}`;
            socket.on("error", () => {}); // surfaces through runTunnel
            const done = runTunnel(client, { device, port: remote, input: socket, output: socket, signal: stop })
              .catch((err: unknown) => {
                if (!stop.aborted) process.stderr.write(`error: ${from} -> ${device}:${remote}: ${describeError(err)}\n`);
                socket.destroy();
              })
              .finally(() => open.delete(done));
            open.add(done);
          });
          try {
            await new Promise<void>((resolve, reject) => {
              server.once("error", (err) => reject(new UsageError(`cannot listen on ${opts.address}:${local}: ${err.message}`)));
              server.listen(local, opts.address, resolve);
            });
          } catch (err) {
            await closeAll();
            throw err;
          }
          servers.push(server);
          const { port } = server.address() as net.AddressInfo;
          out(`forwarding ${opts.address}:${port} -> ${found?.name ?? device}:${remote}\n`);
        }
        await waitForAbort(stop);
        await Promise.all([closeAll(), ...open]);
      }),
    );
}
