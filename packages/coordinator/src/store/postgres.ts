import { EventEmitter } from "node:events";
import pg from "pg";
import { Kysely, PostgresDialect, sql } from "kysely";
import type { StoreAdapter } from "./adapter.ts";
import { LocalEvents } from "./replicas/events.ts";
import { KyselyStore } from "./kysely-store.ts";
import type { Database } from "./schema/schema.ts";
import type { Store } from "./store.ts";
import { postgresLogInserter } from "./telemetry/log-insert.ts";

const CHANNEL = "flotilla_device";
/** Replica events (replicas/events.ts): "<topic>\n<payload>". */
const EVENT_CHANNEL = "flotilla_event";
const INT8 = 20;
/** SQLSTATE unique_violation. */
const UNIQUE_VIOLATION = "23505";

// bigint columns hold milliseconds and counters, all well inside 2^53: read them as numbers.
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8 && format !== "binary" ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

/**
 * Device-change notifications through LISTEN/NOTIFY, so every replica sharing the database
 * wakes its agents' Watch streams. NOTIFY is sent inside the transaction: PostgreSQL delivers it
 * on commit only, and to this replica too, so there is one path for local and remote changes.
 */
class PgNotifier {
  private readonly events = new EventEmitter();
  private client: pg.Client | undefined;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private lost = false;
  /** Replica events as they arrive; `resynced` after the connection came back. */
  readonly replicaEvents: LocalEvents;

  constructor(
    private readonly url: string,
    send: (topic: string, payload: string) => Promise<void>,
  ) {
    this.events.setMaxListeners(0);
    this.replicaEvents = new LocalEvents(send);
  }

  async start(): Promise<void> {
    const client = new pg.Client({ connectionString: this.url });
    client.on("notification", (msg) => {
      if (msg.channel === EVENT_CHANNEL) {
        const text = msg.payload ?? "";
        const nl = text.indexOf("\n");
        if (nl > 0) this.replicaEvents.deliver(text.slice(0, nl), text.slice(nl + 1));
        return;
      }
      const [orgId, deviceId] = (msg.payload ?? "").split(":");
      if (orgId && deviceId) this.events.emit("change", orgId, deviceId);
    });
    client.on("error", () => this.reconnect());
    client.on("end", () => this.reconnect());
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    await client.query(`LISTEN ${EVENT_CHANNEL}`);
    this.client = client;
    if (this.lost) {
      this.lost = false;
      this.replicaEvents.resynced();
    }
  }

  private reconnect(): void {
    if (this.closed || this.retry) return;
    this.client = undefined;
    this.lost = true;
    this.retry = setTimeout(() => {
      this.retry = undefined;
      this.start().catch(() => this.reconnect());
    }, 1000);
  }

  listen(listener: (orgId: string, deviceId: string) => void): () => void {
    this.events.on("change", listener);
    return () => void this.events.off("change", listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    await this.client?.end().catch(() => {});
  }
}

/** Opens the PostgreSQL database at `url` and migrates it (replicas may do so at once). */
export async function openPostgresStore(url: string): Promise<Store> {
  const pool = new pg.Pool({ connectionString: url, max: 10, types });
  // An idle pooled connection that the server ends (a restart, a failover, an administrator's
  // pg_terminate_backend) is reported here; without a listener it would end the process. The
  // pool drops that connection and opens a new one for the next query.
  pool.on("error", () => {});
  // A connection checked out of the pool (inside a transaction, between two of its queries) that
  // the server ends emits its error on the client itself, where the pool listens no more; its
  // next query fails instead, and the transaction with it.
  pool.on("connect", (client) => client.on("error", () => {}));
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  const notifier = new PgNotifier(url, async (topic, payload) => {
    await sql`SELECT pg_notify(${EVENT_CHANNEL}, ${`${topic}\n${payload}`})`.execute(db);
  });
  const adapter: StoreAdapter = {
    dialect: "postgres",
    rowLocks: true,
    isUniqueViolation: (err) => (err as { code?: unknown } | undefined)?.code === UNIQUE_VIOLATION,
    async notifyInTransaction(trx, orgId, deviceId) {
      await sql`SELECT pg_notify(${CHANNEL}, ${`${orgId}:${deviceId}`})`.execute(trx);
    },
    async notifyManyInTransaction(trx, orgId, deviceIds) {
      if (deviceIds.length === 0) return;
      const payloads = deviceIds.map((id) => `${orgId}:${id}`);
      await sql`SELECT pg_notify(${CHANNEL}, p) FROM unnest(${payloads}::text[]) AS p`.execute(trx);
    },
    insertLogLines: postgresLogInserter,
    notifyAfterCommit: () => {},
    listen: (listener) => notifier.listen(listener),
    events: notifier.replicaEvents,
    close: () => notifier.close(),
  };
  const store = new KyselyStore(db, adapter);
  try {
    await store.migrate();
    await notifier.start();
  } catch (err) {
    await store.close();
    throw new Error(`cannot open PostgreSQL database: ${(err as Error).message}`);
  }
  return store;
}
