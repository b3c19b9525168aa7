import type { commonv1, Identity, Logger } from "@flotilla/protocol";
import type { Auditor } from "./audit/auditor.ts";
import type { Challenges } from "./access/challenges.ts";
import type { RolloutEvents } from "./rollouts/engine.ts";
import type { Leases } from "./server/lease.ts";
import type { Store } from "./store/index.ts";

/** What the services share: built once by the coordinator and handed to each service. */
export interface ServiceContext {
  identity: Identity;
  /** Signs TUF snapshot/timestamp and seals secrets at rest; survives rotate-key (key-rotation.ts). */
  onlineIdentity: Identity;
  /** The chain from earlier coordinator keys to `identity` (key-rotation.ts), sent in Hello. */
  endorsements: commonv1.KeyEndorsement[];
  store: Store;
  challenges: Challenges;
  auditor: Auditor;
  log: Logger;
  /** The address put into join strings. */
  publicUrl: string;
  sessionTtlMs: number;
  /** How often Watch sends a keep-alive and refreshes last-seen. */
  keepaliveMs: number;
  /** A device not seen for this long counts as offline. */
  offlineAfterMs: number;
  /** Background work once across replicas sharing the database (server/lease.ts). */
  leases: Leases;
  /** Tells the rollout engine about release steps and reconnecting devices (set when it starts). */
  rolloutEvents?: RolloutEvents;
}
