/**
 * A small client of the ssh-agent protocol (draft-miller-ssh-agent, sections 3.2 and 3.6):
 * list identities and ask for ed25519 signatures, over the Unix socket in SSH_AUTH_SOCK. The
 * private key never leaves the agent.
 */
import { connect, type Socket } from "node:net";

const SSH_AGENT_FAILURE = 5;
const SSH_AGENTC_REQUEST_IDENTITIES = 11;
const SSH_AGENT_IDENTITIES_ANSWER = 12;
const SSH_AGENTC_SIGN_REQUEST = 13;
const SSH_AGENT_SIGN_RESPONSE = 14;
const MAX_MESSAGE = 256 * 1024;

/** An ed25519 key the agent holds. */
export interface AgentKey {
  publicKey: Uint8Array;
  comment: string;
  /** The key blob as the agent names it. */
  blob: Buffer;
}

function sshString(b: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** Reads SSH wire-format fields from a buffer, throwing on truncation. */
class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}
  byte(): number {
    if (this.pos + 1 > this.buf.length) throw new Error("ssh-agent: truncated message");
    return this.buf[this.pos++]!;
  }
  uint32(): number {
    if (this.pos + 4 > this.buf.length) throw new Error("ssh-agent: truncated message");
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  string(): Buffer {
    const n = this.uint32();
    if (this.pos + n > this.buf.length) throw new Error("ssh-agent: truncated message");
    const s = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
}

/** A connection to an ssh-agent; one request at a time. */
export class SshAgent {
  private buffered = Buffer.alloc(0);
  private waiting: ((msg: Buffer | Error) => void) | undefined;

  private constructor(private readonly socket: Socket) {
    socket.on("data", (d: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, d]);
      this.deliver();
    });
    socket.on("error", (err) => this.fail(err));
    socket.on("close", () => this.fail(new Error("ssh-agent closed the connection")));
  }

  /** Connects to the agent at `socketPath` (default SSH_AUTH_SOCK). */
  static open(socketPath: string | undefined): Promise<SshAgent> {
    if (!socketPath) return Promise.reject(new Error("no ssh-agent: SSH_AUTH_SOCK is not set"));
    return new Promise((resolve, reject) => {
      const s = connect(socketPath);
      s.once("connect", () => {
        s.removeListener("error", reject);
        resolve(new SshAgent(s));
      });
      s.once("error", (err) => reject(new Error(`cannot reach ssh-agent at ${socketPath}: ${err.message}`)));
    });
  }

  private fail(err: Error): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.(err);
  }

  private deliver(): void {
    if (this.buffered.length < 4 || !this.waiting) return;
    const n = this.buffered.readUInt32BE(0);
    if (n > MAX_MESSAGE) return this.fail(new Error("ssh-agent: message too large"));
    if (this.buffered.length < 4 + n) return;
    const msg = this.buffered.subarray(4, 4 + n);
    this.buffered = this.buffered.subarray(4 + n);
    const w = this.waiting;
    this.waiting = undefined;
    w(Buffer.from(msg));
  }

  private request(type: number, payload: Buffer): Promise<Reader & { type: number }> {
    if (this.waiting) return Promise.reject(new Error("ssh-agent: one request at a time"));
    return new Promise((resolve, reject) => {
      this.waiting = (msg) => {
        if (msg instanceof Error) return reject(msg);
        // An empty message has no type byte: reject, rather than throw inside the socket's data handler.
        if (msg.length === 0) return reject(new Error("ssh-agent: empty message"));
        const r = new Reader(msg);
        const t = r.byte();
        resolve(Object.assign(r, { type: t }));
      };
      const body = Buffer.concat([Buffer.from([type]), payload]);
      this.socket.write(sshString(body));
      this.deliver();
    });
  }

  /** The agent's ed25519 keys (other key types are skipped). */
  async ed25519Keys(): Promise<AgentKey[]> {
    const r = await this.request(SSH_AGENTC_REQUEST_IDENTITIES, Buffer.alloc(0));
    if (r.type !== SSH_AGENT_IDENTITIES_ANSWER) throw new Error(`ssh-agent: unexpected answer ${r.type} to a list request`);
    const n = r.uint32();
    const keys: AgentKey[] = [];
    for (let i = 0; i < n; i++) {
      const blob = r.string();
      const comment = r.string().toString("utf8");
      const b = new Reader(blob);
      if (b.string().toString() !== "ssh-ed25519") continue;
      const pk = b.string();
      if (pk.length === 32) keys.push({ publicKey: new Uint8Array(pk), comment, blob });
    }
    return keys;
  }

  /** An ed25519 signature (64 bytes) of `data` by the agent's key `key`. */
  async sign(key: AgentKey, data: Uint8Array): Promise<Uint8Array> {
    const flags = Buffer.alloc(4);
    const r = await this.request(SSH_AGENTC_SIGN_REQUEST, Buffer.concat([sshString(key.blob), sshString(data), flags]));
    if (r.type === SSH_AGENT_FAILURE) throw new Error(`ssh-agent refused to sign with ${key.comment || "the key"}`);
    if (r.type !== SSH_AGENT_SIGN_RESPONSE) throw new Error(`ssh-agent: unexpected answer ${r.type} to a sign request`);
    const sig = new Reader(r.string());
    const alg = sig.string().toString();
    const raw = sig.string();
    if (alg !== "ssh-ed25519" || raw.length !== 64) throw new Error(`ssh-agent: unexpected signature type ${alg}`);
    return new Uint8Array(raw);
  }

  close(): void {
    this.socket.destroy();
  }
}
