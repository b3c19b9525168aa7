import { readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { Key, Metadata, MetadataKind, MetaFile, Signature, Snapshot, Timestamp, type Root, type Targets } from "@tufjs/models";
import { canonicalJson, tufKeyId, writeJsonAtomic, type Identity } from "@flotilla/protocol";

/** Timing of the online roles; see the coordinator's config for each option. */
export interface TufTimings {
  timestampTtlMs: number;
  snapshotTtlMs: number;
  refreshMs: number;
}

/** A refusal of uploaded metadata: the caller answers InvalidArgument or PermissionDenied. */
export class MetadataError extends Error {
  override name = "MetadataError";
  constructor(
    message: string,
    readonly kind: "invalid" | "unsigned" | "conflict",
  ) {
    super(message);
  }
}

/** A root change being written: root and targets, so a crash half-way is finished on restart. */
const PENDING = "pending-root.json";

const FILE = /^(?:(\d{1,10})\.(root|snapshot|targets)|timestamp)\.json$/;
const ORG = /^[A-Za-z0-9_-]{1,64}$/;

/** TUF's date form: seconds precision, Z. */
export function tufDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

/**
 * One TUF repository per organization, as files in `<data-dir>/tuf/<org>/` with consistent
 * snapshots (`N.root.json`, `N.targets.json`, `N.snapshot.json`, `timestamp.json`), read from
 * disk on every request. Root and targets arrive signed by admins and are only checked here;
 * snapshot and timestamp are signed with the coordinator's key (the online key) and refreshed
 * before they expire. Changes to one organization's repository run one at a time in this
 * process; several replicas must share the data directory and may race on a refresh, which only
 * costs a version number.
 */
export class TufRepository {
  private readonly chains = new Map<string, Promise<unknown>>();
  readonly onlineKeyId: string;
  readonly onlineKeyHex: string;

  constructor(
    private readonly dir: string,
    private readonly identity: Identity,
    private readonly timings: TufTimings,
  ) {
    this.onlineKeyId = tufKeyId(identity.publicKey);
    this.onlineKeyHex = Buffer.from(identity.publicKey).toString("hex");
  }

  private orgDir(orgId: string): string {
    if (!ORG.test(orgId)) throw new Error("invalid organization id");
    return join(this.dir, orgId);
  }

  /** A metadata file's bytes as stored, or undefined; `file` is checked against the TUF names. */
  async read(orgId: string, file: string): Promise<Buffer | undefined> {
    if (!FILE.test(file)) return undefined;
    try {
      return await readFile(join(this.orgDir(orgId), file));
    } catch {
      return undefined;
    }
  }

  private async latest(orgId: string, role: "root" | "targets" | "snapshot"): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.orgDir(orgId));
    } catch {
      return 0;
    }
    let max = 0;
    for (const n of names) {
      const m = FILE.exec(n);
      if (m?.[2] === role) max = Math.max(max, Number(m[1]));
    }
    return max;
  }

  private async load<T extends Root | Targets | Snapshot | Timestamp>(orgId: string, file: string, kind: MetadataKind): Promise<Metadata<T> | undefined> {
    const bytes = await this.read(orgId, file);
    if (!bytes) return undefined;
    return Metadata.fromJSON(kind as MetadataKind.Root, JSON.parse(bytes.toString("utf8"))) as unknown as Metadata<T>;
  }

  async root(orgId: string): Promise<Metadata<Root> | undefined> {
    const v = await this.latest(orgId, "root");
    return v ? this.load<Root>(orgId, `${v}.root.json`, MetadataKind.Root) : undefined;
  }

  async targets(orgId: string): Promise<Metadata<Targets> | undefined> {
    const v = await this.latest(orgId, "targets");
    return v ? this.load<Targets>(orgId, `${v}.targets.json`, MetadataKind.Targets) : undefined;
  }

  /** Runs `fn` after every earlier change of this organization's repository, and after finishPending. */
  private serial<T>(orgId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(orgId) ?? Promise.resolve();
    const next = prev
      .catch(() => undefined)
      .then(() => this.finishPending(orgId))
      .then(fn);
    this.chains.set(orgId, next);
    return next;
  }

  /**
   * Accepts a new root: version one higher than the current one, signed by the current root's
   * threshold and its own; snapshot and timestamp must be the online key's. Targets come with
   * it: the first root needs the first targets metadata (version 1, empty); every later root
   * needs the current targets re-signed under it (the next version, the same targets, signed by
   * the new root's threshold), since admins and devices count only the current root's
   * signatures. Root and targets are written together, then a snapshot naming the new targets.
   */
  updateRoot(orgId: string, rootJson: unknown, targetsJson: unknown): Promise<number> {
    return this.serial(orgId, async () => {
      const next = parse<Root>(MetadataKind.Root, rootJson);
      const current = await this.root(orgId);
      const want = (current?.signed.version ?? 0) + 1;
      if (next.signed.version !== want) throw new MetadataError(`root version must be ${want}, not ${next.signed.version}`, "conflict");
      if (next.signed.isExpired()) throw new MetadataError("root metadata has already expired", "invalid");
      this.checkRootShape(next.signed);
      if (current) verify(current, "root", next, "the current root's");
      verify(next, "root", next, "the new root's own");
      const currentTargets = current ? await this.targets(orgId) : undefined;
      if (targetsJson === undefined) {
        throw new MetadataError(current ? "a new root needs the current targets metadata re-signed under it" : "the first root needs the first targets metadata with it", "invalid");
      }
      const targets = parse<Targets>(MetadataKind.Targets, targetsJson);
      const targetsVersion = (currentTargets?.signed.version ?? 0) + 1;
      if (targets.signed.version !== targetsVersion) {
        throw new MetadataError(
          currentTargets ? `the re-signed targets metadata must be version ${targetsVersion}, not ${targets.signed.version}` : "the first targets metadata must be version 1",
          currentTargets ? "conflict" : "invalid",
        );
      }
      if (targets.signed.isExpired()) throw new MetadataError("targets metadata has already expired", "invalid");
      if (targets.signed.delegations) throw new MetadataError("delegations are not supported", "invalid");
      if (!currentTargets && Object.keys(targets.signed.targets).length > 0) throw new MetadataError("the first targets metadata must be empty", "invalid");
      if (currentTargets && !sameTargets(currentTargets.signed, targets.signed)) {
        throw new MetadataError("the targets metadata that comes with a new root must list exactly the current targets", "invalid");
      }
      verify(next, "targets", targets, "the new root's targets");
      // Recorded first: a root without its targets would leave admins and devices with targets
      // the current root did not sign; finishPending completes what a crash cut short.
      await writeJsonAtomic(join(this.orgDir(orgId), PENDING), { root: next.toJSON(), targets: targets.toJSON() });
      await this.finishPending(orgId);
      return want;
    });
  }

  /**
   * Writes the root and targets of a recorded root change (both checked by updateRoot), then a
   * snapshot naming the targets, and forgets the record. Runs inside every change of the
   * organization's repository and at every refresh (the first one before the coordinator
   * serves), so a crash between the files is finished before anyone reads them again.
   */
  private async finishPending(orgId: string): Promise<void> {
    const dir = this.orgDir(orgId);
    let pending: { root: { signed: { version: number } }; targets: { signed: { version: number } } };
    try {
      pending = JSON.parse(await readFile(join(dir, PENDING), "utf8")) as typeof pending;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    await writeJsonAtomic(join(dir, `${pending.root.signed.version}.root.json`), pending.root);
    await writeJsonAtomic(join(dir, `${pending.targets.signed.version}.targets.json`), pending.targets);
    await this.signOnline(orgId, pending.targets.signed.version);
    await rm(join(dir, PENDING), { force: true });
  }

  private checkRootShape(root: Root): void {
    if (!root.consistentSnapshot) throw new MetadataError("root must use consistent snapshots", "invalid");
    for (const role of ["snapshot", "timestamp"]) {
      const r = root.roles[role];
      if (!r || r.threshold !== 1 || r.keyIDs.length !== 1 || r.keyIDs[0] !== this.onlineKeyId) {
        throw new MetadataError(`the ${role} role must be the coordinator's online key ${this.onlineKeyId} alone`, "invalid");
      }
    }
    const online = root.keys[this.onlineKeyId];
    if (online?.keyVal.public !== this.onlineKeyHex) throw new MetadataError("root lists a wrong online key", "invalid");
    for (const role of ["root", "targets"]) {
      const r = root.roles[role];
      if (!r || r.threshold < 1 || r.keyIDs.length < r.threshold) throw new MetadataError(`the ${role} role needs a threshold of at least 1 and enough keys`, "invalid");
      for (const id of r.keyIDs) {
        const k = root.keys[id];
        if (!k || k.keyType !== "ed25519" || k.scheme !== "ed25519") throw new MetadataError(`key ${id} of ${role} must be an ed25519 key listed in root`, "invalid");
        if (id === this.onlineKeyId) throw new MetadataError(`the online key may not sign ${role}`, "invalid");
      }
    }
  }

  /**
   * Accepts new targets metadata: the next version, signed by the root's targets threshold, not
   * expired. `check` sees it before anything is written and throws to refuse it.
   */
  publishTargets(orgId: string, targetsJson: unknown, check: (next: Targets, previous: Targets) => Promise<void>): Promise<number> {
    return this.serial(orgId, async () => {
      const root = await this.root(orgId);
      const current = await this.targets(orgId);
      if (!root || !current) throw new MetadataError("this organization has no signing keys yet: run `flotilla signing-key add`", "conflict");
      const next = parse<Targets>(MetadataKind.Targets, targetsJson);
      const want = current.signed.version + 1;
      if (next.signed.version !== want) throw new MetadataError(`targets version must be ${want}, not ${next.signed.version}`, "conflict");
      if (next.signed.isExpired()) throw new MetadataError("targets metadata has already expired", "invalid");
      if (next.signed.delegations) throw new MetadataError("delegations are not supported", "invalid");
      verify(root, "targets", next, "the root's targets");
      await check(next.signed, current.signed);
      await writeJsonAtomic(join(this.orgDir(orgId), `${want}.targets.json`), next.toJSON());
      await this.signOnline(orgId, want);
      return want;
    });
  }

  /** Signs a new snapshot (naming targets version `targetsVersion`) and a new timestamp. */
  private async signOnline(orgId: string, targetsVersion: number): Promise<void> {
    const now = Date.now();
    const snapshotVersion = (await this.latest(orgId, "snapshot")) + 1;
    const snapshot = new Metadata(
      new Snapshot({
        version: snapshotVersion,
        specVersion: "1.0.31",
        expires: tufDate(now + this.timings.snapshotTtlMs),
        meta: { "targets.json": new MetaFile({ version: targetsVersion }) },
      }),
    );
    snapshot.sign((data) => this.signature(data));
    await writeJsonAtomic(join(this.orgDir(orgId), `${snapshotVersion}.snapshot.json`), snapshot.toJSON());
    await this.signTimestamp(orgId, snapshotVersion, now);
  }

  private async signTimestamp(orgId: string, snapshotVersion: number, now: number): Promise<void> {
    const previous = await this.load<Timestamp>(orgId, "timestamp.json", MetadataKind.Timestamp).catch(() => undefined);
    const timestamp = new Metadata(
      new Timestamp({
        version: (previous?.signed.version ?? 0) + 1,
        specVersion: "1.0.31",
        expires: tufDate(now + this.timings.timestampTtlMs),
        snapshotMeta: new MetaFile({ version: snapshotVersion }),
      }),
    );
    timestamp.sign((data) => this.signature(data));
    await writeJsonAtomic(join(this.orgDir(orgId), "timestamp.json"), timestamp.toJSON());
  }

  private signature(data: Buffer): Signature {
    return new Signature({ keyID: this.onlineKeyId, sig: Buffer.from(this.identity.sign(data)).toString("hex") });
  }

  /** Re-signs snapshot and timestamp where they would expire within two refresh periods. */
  async refreshAll(): Promise<void> {
    let orgs: string[];
    try {
      orgs = await readdir(this.dir);
    } catch {
      return;
    }
    for (const orgId of orgs.filter((o) => ORG.test(o))) await this.refresh(orgId);
  }

  refresh(orgId: string): Promise<void> {
    return this.serial(orgId, async () => {
      const targets = await this.targets(orgId);
      if (!targets) return;
      const horizon = Date.now() + 2 * this.timings.refreshMs;
      const sv = await this.latest(orgId, "snapshot");
      const snapshot = sv ? await this.load<Snapshot>(orgId, `${sv}.snapshot.json`, MetadataKind.Snapshot) : undefined;
      if (!snapshot || snapshot.signed.isExpired(new Date(horizon))) return this.signOnline(orgId, targets.signed.version);
      const timestamp = await this.load<Timestamp>(orgId, "timestamp.json", MetadataKind.Timestamp).catch(() => undefined);
      if (!timestamp || timestamp.signed.isExpired(new Date(horizon))) await this.signTimestamp(orgId, sv, Date.now());
    });
  }

  /** The online key as a TUF key, for admins building a root. */
  onlineKey(): Key {
    return new Key({ keyID: this.onlineKeyId, keyType: "ed25519", scheme: "ed25519", keyVal: { public: this.onlineKeyHex } });
  }
}

function parse<T extends Root | Targets>(kind: MetadataKind, json: unknown): Metadata<T> {
  let md: Metadata<T>;
  try {
    md = Metadata.fromJSON(kind as MetadataKind.Root, json as Record<string, never>) as unknown as Metadata<T>;
  } catch (err) {
    throw new MetadataError(`invalid ${kind} metadata: ${err instanceof Error ? err.message : String(err)}`, "invalid");
  }
  if (md.signed.type !== kind) throw new MetadataError(`expected ${kind} metadata, got ${md.signed.type}`, "invalid");
  return md;
}

/** The same target entries (paths, lengths, hashes, custom metadata), whatever the key order. */
function sameTargets(a: Targets, b: Targets): boolean {
  const entries = (t: Targets) => canonicalJson((t.toJSON() as { targets: unknown }).targets);
  return entries(a) === entries(b);
}

function verify(delegator: Metadata<Root>, role: "root" | "targets", md: Metadata<Root> | Metadata<Targets>, whose: string): void {
  try {
    delegator.verifyDelegate(role, md);
  } catch (err) {
    throw new MetadataError(`${role} metadata is not signed by ${whose} threshold of keys: ${err instanceof Error ? err.message : String(err)}`, "unsigned");
  }
}
