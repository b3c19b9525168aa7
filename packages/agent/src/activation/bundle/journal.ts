import { readJsonIfExists } from "@flotilla/protocol/agent";
import { removeDurable, writeFileDurable } from "../../durable.ts";
import type { NameLayout, ReleaseRecord } from "./layout.ts";

/**
 * Steps of a bundle activation, each recorded durably before it starts, so that `recover()`
 * after a `kill -9` knows what to finish or undo:
 * - `unpacking`: the new release is being unpacked under a temporary name; discard it.
 * - `switching`: the old process is being stopped and `current` swapped; the symlink decides.
 * - `health-checking`: `current` is the new release; re-run its checks, then confirm or roll back.
 * - `rolling-back`: going back to `from`; finish it.
 * - `confirmed`: the new release passed; only pruning is left.
 */
export type JournalStep = "unpacking" | "switching" | "health-checking" | "rolling-back" | "confirmed";

/** What `journal.json` holds: the step being taken and everything needed to finish or undo it. */
export interface JournalEntry {
  step: JournalStep;
  /** The release being activated. */
  to: ReleaseRecord;
  /** The release `current` pointed at before, if any. */
  from?: ReleaseRecord;
  /** What `previous` pointed at before, restored if the activation is abandoned. */
  previousBefore?: string;
  /** Why a rollback happens (step `rolling-back`). */
  reason?: string;
}

/** The activation a crash interrupted, if any; throws if the journal is damaged. */
export function readJournal(layout: NameLayout): Promise<JournalEntry | undefined> {
  return readJsonIfExists<JournalEntry>(layout.journalPath);
}

/** Records the step durably (temp file, fsync, rename, fsync dir) before it is taken. */
export function writeJournal(layout: NameLayout, entry: JournalEntry): Promise<void> {
  return writeFileDurable(layout.journalPath, JSON.stringify(entry, null, 2) + "\n");
}

/** Ends the activation: removes the journal durably. */
export function clearJournal(layout: NameLayout): Promise<void> {
  return removeDurable(layout.journalPath);
}
