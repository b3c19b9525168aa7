import type { Kysely } from "kysely";
import type { Database } from "../schema/schema.ts";

/** Small coordinator-wide values (the setup code hash, for one), by key. */
export interface SettingsStore {
  getSetting(key: string): Promise<string | undefined>;
  /** Sets the value, replacing any earlier one. */
  setSetting(key: string, value: string): Promise<void>;
}

export class KyselySettingsStore implements SettingsStore {
  constructor(private readonly db: Kysely<Database>) {}

  async getSetting(key: string): Promise<string | undefined> {
    return (await this.db.selectFrom("settings").select("value").where("key", "=", key).executeTakeFirst())?.value;
  }

  async setSetting(key: string, value: string): Promise<void> {
    await this.db
      .insertInto("settings")
      .values({ key, value })
      .onConflict((oc) => oc.column("key").doUpdateSet({ value }))
      .execute();
  }
}
