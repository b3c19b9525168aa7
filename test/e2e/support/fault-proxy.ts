/**
 * A TCP proxy on loopback that injects network faults between agents (or admins) and a
 * coordinator: the weather a fleet lives in. Clients connect to `proxy.url` (an agent's join
 * string carries it when the coordinator runs with `--public-url proxy.url`); the proxy forwards
 * to the coordinator and applies the current mode to every connection, old and new:
 *
 * - `pass`: forwards bytes as they come;
 * - `blackhole`: accepts and holds connections, forwards nothing either way (a NAT that silently
 *   drops packets). Bytes already sent wait, as TCP's retransmissions would, and flow again if
 *   the connection is still there when the mode returns to `pass`;
 * - `reset`: destroys every open connection with a TCP RST, and each new one at once;
 * - `refuse`: closes the listening socket, so new connections are refused (ECONNREFUSED);
 *   open ones carry on;
 * - latency and a bandwidth cap apply in `pass` mode, each direction on its own.
 *
 * In `pass` mode a side that closes its connection (FIN) has its bytes still in the link
 * delivered first, then the close passed on, as a real link does: an HTTP server that answers and
 * closes is read to the last byte, however slow the link.
 *
 * Every timer and socket it owns ends with `close()`.
 */
import { createServer, connect, type Server, type Socket } from "node:net";

export type FaultMode = "pass" | "blackhole" | "reset" | "refuse";

export interface FaultProxyOptions {
  /** The coordinator's host and port. */
  target: { host: string; port: number };
  /** Listen on this port (0: any free one). A fixed port lets the proxy come back after `refuse`. */
  port?: number;
}

interface Pipe {
  client: Socket;
  upstream: Socket;
  lanes: Lane[];
}

/** Delays and paces one direction of one connection: latency first, then at most `rate` bytes/s. */
class Lane {
  private queue: { at: number; data: Buffer }[] = [];
  private queued = 0;
  private timer: NodeJS.Timeout | undefined;
  private nextFree = 0;
  /** The source closed its side: end `out` once the queue is delivered. */
  private ending = false;

  constructor(
    private readonly proxy: FaultProxy,
    private readonly source: Socket,
    private readonly out: Socket,
  ) {}

  /**
   * What may wait in the lane before the sender is held back, as a link's buffers hold it back:
   * the bytes in flight for the latency at the capped rate, and 64 KiB of buffer beyond.
   */
  private get limit(): number {
    const rate = this.proxy.bytesPerSecond;
    return 64 * 1024 + (rate > 0 ? (rate * this.proxy.latencyMs) / 1000 : 0);
  }

  push(data: Buffer): void {
    const now = Date.now();
    const rate = this.proxy.bytesPerSecond;
    // Each chunk leaves after the latency, and not before the link has carried the chunks ahead.
    const start = Math.max(now + this.proxy.latencyMs, this.nextFree);
    const at = rate > 0 ? start + (data.length / rate) * 1000 : start;
    this.nextFree = rate > 0 ? at : 0;
    if (at <= now && this.queue.length === 0 && this.proxy.mode !== "blackhole") {
      this.write(data);
      return;
    }
    this.queue.push({ at, data });
    this.queued += data.length;
    if (this.queued > this.limit) this.source.pause();
    this.schedule();
  }

  /** Sends what waited out a blackhole. */
  resume(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.queue.length === 0 || this.proxy.mode === "blackhole") return;
    const delay = Math.max(0, this.queue[0]!.at - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const now = Date.now();
      while (this.queue.length > 0 && this.queue[0]!.at <= now && this.proxy.mode !== "blackhole") {
        const { data } = this.queue.shift()!;
        this.queued -= data.length;
        this.write(data);
      }
      if (this.queued <= this.limit / 2 && this.proxy.mode !== "blackhole") this.source.resume();
      this.endIfDone();
      this.schedule();
    }, delay);
  }

  private write(data: Buffer): void {
    if (!this.out.destroyed) this.out.write(data);
  }

  /** The source sent its last byte (FIN or closed): pass the close on after what is still in the link. */
  finish(): void {
    this.ending = true;
    this.endIfDone();
  }

  private endIfDone(): void {
    if (this.ending && this.queue.length === 0 && !this.out.destroyed) this.out.end();
  }

  close(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.queue = [];
  }
}

export class FaultProxy {
  mode: FaultMode = "pass";
  /** Added one-way delay, in ms, for each chunk in each direction. */
  latencyMs = 0;
  /** Bandwidth cap per direction per connection, bytes per second; 0: none. */
  bytesPerSecond = 0;
  /** Connections accepted so far (a measure of reconnects). */
  accepted = 0;

  private server: Server | undefined;
  private readonly pipes = new Set<Pipe>();
  private port = 0;

  private constructor(private opts: FaultProxyOptions) {}

  /** Starts a proxy in `pass` mode. */
  static async start(opts: FaultProxyOptions): Promise<FaultProxy> {
    const p = new FaultProxy(opts);
    p.port = opts.port ?? 0;
    await p.listen();
    return p;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Open connections through the proxy right now. */
  get open(): number {
    return this.pipes.size;
  }

  /** Switches mode; applies to open connections at once. */
  async set(mode: FaultMode): Promise<void> {
    const was = this.mode;
    this.mode = mode;
    if (mode === "reset") for (const p of [...this.pipes]) this.drop(p, true);
    if (mode === "pass") for (const p of this.pipes) for (const l of p.lanes) l.resume();
    if (mode === "refuse" && was !== "refuse") await this.unlisten();
    if (mode !== "refuse" && was === "refuse") await this.listen();
  }

  /** Sends new connections to `target` from now on (a load balancer picking another replica); open ones carry on. */
  retarget(target: { host: string; port: number }): void {
    this.opts.target = target;
  }

  /** Resets every open connection once, leaving the mode as it is. */
  resetAll(): void {
    for (const p of [...this.pipes]) this.drop(p, true);
  }

  async close(): Promise<void> {
    for (const p of [...this.pipes]) this.drop(p, true);
    await this.unlisten();
  }

  private listen(): Promise<void> {
    // Half-open: a side's FIN ends only its direction (Lane.finish), as on a real link.
    const server = createServer({ allowHalfOpen: true }, (client) => this.accept(client));
    this.server = server;
    return new Promise((res, rej) => {
      server.once("error", rej);
      server.listen(this.port, "127.0.0.1", () => {
        server.off("error", rej);
        server.on("error", () => {});
        const addr = server.address();
        if (typeof addr === "object" && addr) this.port = addr.port;
        res();
      });
    });
  }

  /** Stops accepting at once; open connections carry on (close() waits for none of them). */
  private unlisten(): Promise<void> {
    this.server?.close();
    this.server = undefined;
    return Promise.resolve();
  }

  private accept(client: Socket): void {
    this.accepted++;
    client.on("error", () => {});
    if (this.mode === "reset") {
      client.resetAndDestroy();
      return;
    }
    const upstream = connect({ port: this.opts.target.port, host: this.opts.target.host, allowHalfOpen: true });
    upstream.on("error", () => {});
    const toUpstream = new Lane(this, client, upstream);
    const toClient = new Lane(this, upstream, client);
    const pipe: Pipe = { client, upstream, lanes: [toUpstream, toClient] };
    this.pipes.add(pipe);
    client.on("data", (d: Buffer) => toUpstream.push(d));
    upstream.on("data", (d: Buffer) => toClient.push(d));
    // A side that is done sending (FIN, or gone): what it sent still crosses the link, then its
    // close. A side that is gone receives nothing more. The pipe is dropped once both are gone.
    // In a blackhole the close still passes at once and ends both sides: a simplification (a real
    // blackhole would drop the FIN too) that the tests of how soon the coordinator notices a
    // vanished agent are written against.
    const dropNow = () => {
      toUpstream.close();
      toClient.close();
      this.drop(pipe, false);
    };
    client.on("end", () => (this.mode === "blackhole" ? dropNow() : toUpstream.finish()));
    upstream.on("end", () => (this.mode === "blackhole" ? dropNow() : toClient.finish()));
    const gone = (toIt: Lane, fromIt: Lane) => () => {
      if (this.mode === "blackhole") return dropNow();
      toIt.close();
      fromIt.finish();
      if (client.destroyed && upstream.destroyed) this.drop(pipe, false);
    };
    client.on("close", gone(toClient, toUpstream));
    upstream.on("close", gone(toUpstream, toClient));
  }

  private drop(pipe: Pipe, reset: boolean): void {
    if (!this.pipes.delete(pipe)) return;
    if (reset) {
      pipe.client.resetAndDestroy();
      pipe.upstream.resetAndDestroy();
    } else {
      pipe.client.destroy();
      pipe.upstream.destroy();
    }
  }
}
