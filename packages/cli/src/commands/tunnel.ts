import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import net from "node:net";
import type { Command } from "commander";
import { createClient } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { authenticatedTransport, targetUrl, type AdminTarget } from "../admin/client.ts";
import { deviceStatus } from "../devices/view.ts";
import { describeError, UsageError } from "../errors.ts";
import type { Run } from "../run.ts";
import { stopSignal, waitForAbort } from "../signals.ts";
import { parseMapping, parsePort, sshArguments } from "../tunnel/arguments.ts";
import { runTunnel, tunnelClient } from "../tunnel/stream.ts";

export function registerTunnelCommands(program: Command, target: () => AdminTarget, run: Run): void {
  program
    .command("tunnel <device>")
    .description("connect stdin/stdout to a TCP port of a device, through the coordinator (an ssh ProxyCommand)")
    .option("--port <port>", "port on the device (it must be in its agent's --tunnel-ports)", "22")
    .action((device: string, opts: { port: string }) =>
      run(async () => {
        const port = parsePort(opts.port);
        const { transport, token } = await authenticatedTransport(target());
        const client = tunnelClient(transport, token);
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
        const { transport, token } = await authenticatedTransport(target());
        const { device: found } = await createClient(adminv1.AdminService, transport).getDevice({ device });
        if (found && deviceStatus(found) !== "online") {
          throw new Error(`device ${found.name} is ${deviceStatus(found)}`);
        }
        const client = tunnelClient(transport, token);
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
