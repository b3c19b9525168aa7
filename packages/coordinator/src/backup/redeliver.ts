/**
 * After a restore: the devices a rollout was waiting on when the backup was taken may have
 * finished since, and their reports went to the lost coordinator, so the restored one would wait
 * on them forever (an agent reports a release once per deployment). Their release is told to them
 * again, as a new deployment of the same target: an agent that runs it already reports it healthy
 * at once, one that was part way carries on, and the rollout moves on from what they report.
 */
import SQLite from "better-sqlite3";

/** Rollout device states in which the rollout waits for the device's next report. */
const WAITING = ["notified", "downloading", "verifying", "activating", "health-checking", "rolling-back"];

/** The devices whose release is told again; how many. */
export function redeliverWaitingReleases(dbPath: string, now: number): number {
  const db = new SQLite(dbPath, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    const waiting = `
      SELECT rd.org_id, rd.device_id, r.release_name AS name
      FROM rollout_devices rd JOIN rollouts r ON r.id = rd.rollout_id
      WHERE r.status IN ('running', 'paused') AND rd.state IN (${WAITING.map(() => "?").join(", ")})`;
    return db.transaction(() => {
      const rows = db.prepare(waiting).all(...WAITING) as { org_id: string; device_id: string; name: string }[];
      const touch = db.prepare("UPDATE device_releases SET desired_at = ? WHERE org_id = ? AND device_id = ? AND name = ?");
      const bump = db.prepare("UPDATE devices SET generation = generation + 1, updated_at = ? WHERE org_id = ? AND id = ?");
      let n = 0;
      for (const r of rows) {
        if (touch.run(now, r.org_id, r.device_id, r.name).changes > 0) {
          bump.run(now, r.org_id, r.device_id);
          n++;
        }
      }
      return n;
    })();
  } finally {
    db.close();
  }
}
