import { join } from "node:path";
import SQLite from "better-sqlite3";
import { Kysely, SqliteDialect, sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { GroupCommit } from "./group-commit.ts";
import type { Database } from "./schema/schema.ts";

const tmp = useTempDir("flotilla-group-commit-");

interface T {
  t: { id: number; v: string };
}

let db: Kysely<T> | undefined;
afterEach(async () => {
  await db?.destroy();
  db = undefined;
});

async function open(): Promise<{ db: Kysely<T>; path: string }> {
  const path = join(tmp.path, "g.db");
  const sqlite = new SQLite(path);
  sqlite.pragma("journal_mode = WAL");
  db = new Kysely<T>({ dialect: new SqliteDialect({ database: sqlite }) });
  await sql`create table t (id integer primary key, v text not null)`.execute(db);
  return { db, path };
}

/** The rows another connection sees: what is committed, not what a transaction holds. */
function committed(path: string): { id: number; v: string }[] {
  const other = new SQLite(path, { readonly: true });
  try {
    return other.prepare("select id, v from t order by id").all() as { id: number; v: string }[];
  } finally {
    other.close();
  }
}

describe("group commit", () => {
  it("puts jobs that arrive together in one commit, and settles each after it is on disk", async () => {
    const { db, path } = await open();
    const group = new GroupCommit(db as unknown as Kysely<Database>);
    const seen: number[] = [];
    const jobs = Array.from({ length: 50 }, (_, i) =>
      group
        .run(async (trx) => {
          await (trx as unknown as Kysely<T>).insertInto("t").values({ id: i, v: `v${i}` }).execute();
          return i * 2;
        })
        .then((r) => {
          // Settled only after the commit: another connection sees this row already.
          if (committed(path).some((row) => row.id === i)) seen.push(i);
          return r;
        }),
    );
    expect(await Promise.all(jobs)).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
    expect(seen).toHaveLength(50);
    expect(group.stats).toEqual({ commits: 1, jobs: 50 });
  });

  it("fails only the job that failed: the others of its batch are committed", async () => {
    const { db, path } = await open();
    const group = new GroupCommit(db as unknown as Kysely<Database>);
    const insert = (id: number, v: string) => group.run(async (trx) => void (await (trx as unknown as Kysely<T>).insertInto("t").values({ id, v }).execute()));
    const results = await Promise.allSettled([insert(1, "a"), insert(2, "b"), insert(1, "duplicate"), insert(3, "c")]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "fulfilled", "rejected", "fulfilled"]);
    expect(String((results[2] as PromiseRejectedResult).reason)).toMatch(/UNIQUE/);
    expect(committed(path)).toEqual([
      { id: 1, v: "a" },
      { id: 2, v: "b" },
      { id: 3, v: "c" },
    ]);
  });

  it("takes jobs that arrive during a commit into the next one", async () => {
    const { db } = await open();
    const group = new GroupCommit(db as unknown as Kysely<Database>);
    let later: Promise<unknown>[] = [];
    const first = group.run(async (trx) => {
      // Arrive while the first batch's transaction is open.
      later = Array.from({ length: 10 }, (_, i) => group.run((t) => (t as unknown as Kysely<T>).insertInto("t").values({ id: 100 + i, v: "later" }).execute()));
      await (trx as unknown as Kysely<T>).insertInto("t").values({ id: 1, v: "first" }).execute();
    });
    await first;
    await Promise.all(later);
    expect(group.stats).toEqual({ commits: 2, jobs: 11 });
  });

  it("lets light jobs wait for company, and sends a heavy one at once", async () => {
    const { db } = await open();
    const group = new GroupCommit(db as unknown as Kysely<Database>, 256, 2_000, 100);
    const insert = (id: number, weight: number) => group.run((t) => (t as unknown as Kysely<T>).insertInto("t").values({ id, v: "x" }).execute(), weight);
    // A heavy job is not held back by the 2 s linger: it is committed alone.
    await insert(1, 1000);
    expect(group.stats).toEqual({ commits: 1, jobs: 1 });
    // Light jobs arriving a few milliseconds apart share one commit.
    const light: Promise<unknown>[] = [];
    for (let i = 0; i < 5; i++) {
      light.push(insert(10 + i, 5));
      await new Promise((r) => setTimeout(r, 5));
    }
    await Promise.all(light);
    expect(group.stats).toEqual({ commits: 2, jobs: 6 });
  });
});
