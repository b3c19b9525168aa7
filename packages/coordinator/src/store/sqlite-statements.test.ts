import SQLite from "better-sqlite3";
import { Kysely, SqliteDialect, sql } from "kysely";
import { describe, expect, it } from "vitest";
import { cachedStatements } from "./sqlite.ts";

describe("SQLite statements prepared once", () => {
  it("reuses a statement for the same SQL and drops the least recently used past 500", () => {
    const db = new SQLite(":memory:");
    const wrapped = cachedStatements(db);
    const first = wrapped.prepare("select 1");
    expect(wrapped.prepare("select 1")).toBe(first);
    for (let i = 0; i < 499; i++) wrapped.prepare(`select ${i + 2}`);
    // "select 1" was used before the 499 others: still within 500.
    expect(wrapped.prepare("select 1")).toBe(first);
    wrapped.prepare("select 'one more'");
    // Now "select 2" is the least recently used, and gone; "select 1" was used again and stays.
    expect(wrapped.prepare("select 1")).toBe(first);
    const two = wrapped.prepare("select 2");
    expect(wrapped.prepare("select 2")).toBe(two);
    wrapped.close();
  });

  it("gives Kysely the same answers with statements reused, in and out of transactions", async () => {
    const db = new Kysely<{ t: { id: number; v: string } }>({ dialect: new SqliteDialect({ database: cachedStatements(new SQLite(":memory:")) }) });
    await sql`create table t (id integer primary key, v text not null)`.execute(db);
    for (let i = 0; i < 3; i++) await db.insertInto("t").values({ id: i, v: `v${i}` }).execute();
    await db.transaction().execute(async (trx) => {
      await trx.updateTable("t").set({ v: "changed" }).where("id", "=", 1).execute();
    });
    await expect(
      db.transaction().execute(async (trx) => {
        await trx.updateTable("t").set({ v: "lost" }).where("id", "=", 2).execute();
        throw new Error("rolled back");
      }),
    ).rejects.toThrow("rolled back");
    const rows = await db.selectFrom("t").selectAll().orderBy("id").execute();
    expect(rows).toEqual([
      { id: 0, v: "v0" },
      { id: 1, v: "changed" },
      { id: 2, v: "v2" },
    ]);
    expect(await db.selectFrom("t").select("v").where("id", "=", 0).executeTakeFirst()).toEqual({ v: "v0" });
    expect(await db.selectFrom("t").select("v").where("id", "=", 2).executeTakeFirst()).toEqual({ v: "v2" });
    await db.destroy();
  });
});
