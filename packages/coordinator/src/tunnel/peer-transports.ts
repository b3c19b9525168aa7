import type { Transport } from "@connectrpc/connect";
import type { ClosableTransport } from "@flotilla/protocol";

/** How long a connection to another replica is kept after its last tunnel ended. */
export const PEER_IDLE_MS = 60_000;

/** A transport to another replica, lent to one tunnel; `release` once the tunnel ended. */
export interface PeerLease {
  transport: Transport;
  /** `failed`: the call ended in a way that suggests the connection broke; it is not lent again. */
  release(failed: boolean): void;
}

interface Peer {
  replicaId: string;
  address: string;
  opened: Promise<ClosableTransport>;
  /** What `opened` resolved to, once it did. */
  ready: ClosableTransport | undefined;
  /** Tunnels using it now. */
  users: number;
  idle: NodeJS.Timeout | undefined;
  /** No longer lent: closed once its last tunnel ends. */
  retired: boolean;
  disposed: boolean;
}

/**
 * One transport (one HTTP/2 connection, TLS pinned to the coordinator key) per other replica,
 * shared by all the tunnels carried there, at once and one after another, instead of a TLS and
 * HTTP/2 handshake per tunnel. A transport is dropped when a tunnel on it fails like a broken
 * connection, when its HTTP/2 session ended in an error, when the replica's address changed,
 * after `idleMs` without tunnels, and on close(); the next tunnel opens a fresh one.
 */
export class PeerTransports {
  /** Transports opened since start (each one TLS handshake and one HTTP/2 session at a time). */
  opened = 0;
  private readonly peers = new Map<string, Peer>();
  private closed = false;

  constructor(
    private readonly open: (address: string) => Promise<ClosableTransport>,
    private readonly idleMs = PEER_IDLE_MS,
  ) {}

  /** Transports kept now (lent or idle), for tests. */
  get size(): number {
    return this.peers.size;
  }

  /** The transport to replica `replicaId` at `address`: the one kept for it, else a new one. */
  async acquire(replicaId: string, address: string): Promise<PeerLease> {
    if (this.closed) throw new Error("this replica is shutting down");
    let peer = this.peers.get(replicaId);
    if (peer && (peer.address !== address || peer.ready?.sessionFailed?.())) {
      this.retire(peer);
      peer = this.peers.get(replicaId);
    }
    if (!peer) {
      const p: Peer = { replicaId, address, opened: this.open(address), ready: undefined, users: 0, idle: undefined, retired: false, disposed: false };
      this.opened++;
      this.peers.set(replicaId, p);
      p.opened.then(
        (t) => {
          p.ready = t;
          if (p.disposed) t.close();
        },
        () => this.retire(p),
      );
      peer = p;
    }
    const p = peer;
    p.users++;
    clearTimeout(p.idle);
    let opened: ClosableTransport;
    try {
      opened = await p.opened;
    } catch (err) {
      this.release(p);
      throw err;
    }
    let released = false;
    return {
      transport: opened.transport,
      release: (failed) => {
        if (released) return;
        released = true;
        if (failed) this.retire(p);
        this.release(p);
      },
    };
  }

  /** Closes every transport, ending the tunnels on them. */
  close(): void {
    this.closed = true;
    for (const p of [...this.peers.values()]) {
      this.retire(p);
      dispose(p);
    }
  }

  private release(p: Peer): void {
    p.users--;
    if (p.users > 0) return;
    if (p.retired) return dispose(p);
    clearTimeout(p.idle);
    p.idle = setTimeout(() => this.retire(p), this.idleMs);
    p.idle.unref();
  }

  /** Lends `p` no more; closes it now when no tunnel uses it, else when the last one ends. */
  private retire(p: Peer): void {
    if (this.peers.get(p.replicaId) === p) this.peers.delete(p.replicaId);
    p.retired = true;
    if (p.users === 0) dispose(p);
  }
}

function dispose(p: Peer): void {
  clearTimeout(p.idle);
  if (p.disposed) return;
  p.disposed = true;
  // One still opening is closed as soon as it is open.
  p.ready?.close();
}
