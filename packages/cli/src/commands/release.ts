import { basename } from "node:path";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { Metadata, MetadataKind, Targets } from "@tufjs/models";
import { adminv1, parseReleaseMeta, releaseTargetPath, type ReleaseMeta } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { ExitError, UsageError } from "../errors.ts";
import { json, parseDuration, table } from "../output.ts";
import { nextRoot, signMetadata, SPEC_VERSION, tufDate } from "../signing/metadata.ts";
import { pinnedRoots, pinRoots, verifiedRepository } from "../signing/trusted-root.ts";
import { prepareNixosRelease } from "../releases/nixos.ts";
import { uploadArtifact } from "../releases/upload.ts";
import { reissuedTarget, SignedTargets } from "../signing/signed-targets.ts";
import { collect, DEFAULT_TARGETS_EXPIRY, signers, withSigningOptions, type SigningOpts } from "../signing/signing-options.ts";
import type { Run } from "../run.ts";

/** The same targets as `current`, the next version, unsigned: to be signed under a new root. */
function resignedTargets(current: Metadata<Targets>, expiresMs: number): Metadata<Targets> {
  return Metadata.fromJSON(MetadataKind.Targets, {
    signatures: [],
    signed: { ...current.signed.toJSON(), version: current.signed.version + 1, expires: tufDate(Date.now() + expiresMs) },
  } as never) as Metadata<Targets>;
}

function releaseJson(r: adminv1.Release) {
  return {
    name: r.name,
    version: r.version,
    counter: Number(r.counter),
    kind: r.kind,
    targetPath: r.targetPath,
    sha256: r.sha256,
    length: Number(r.length),
    createdAt: r.createdAt ? new Date(timestampMs(r.createdAt)).toISOString() : null,
    meta: JSON.parse(r.metaJson || "{}") as unknown,
  };
}

export function registerReleaseCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const keys = program.command("signing-key").description("the admin keys that sign this organization's releases (TUF root and targets)");

  withSigningOptions(
    keys
      .command("add")
      .description(
        "add (or with --remove, remove) signing keys (a key file, or ssh-agent; default: your admin key); the new root and the current targets, re-signed under it, are signed by every key given, which must include the current threshold",
      )
      .option("--threshold <n>", "signatures needed on root and targets from now on")
      .option("--remove <keyid>", "remove this signing key; repeatable", collect, [])
      .option("--expires <duration>", "how long the new root is valid", "365d"),
  ).action(
    (o: SigningOpts & { threshold?: string; remove: string[]; expires: string }) =>
      run(async (out) => {
        const threshold = o.threshold === undefined ? undefined : Number(o.threshold);
        if (threshold !== undefined && (!Number.isInteger(threshold) || threshold < 1)) throw new UsageError("--threshold must be a positive integer");
        const client = await serviceClient(target(), adminv1.ReleaseService);
        // The next root extends the one this admin verified, never one the coordinator made up.
        const repo = await verifiedRepository(target(), client);
        const previous = repo.root?.signed;
        const s = await signers(target(), o);
        try {
          const root = new Metadata(
            nextRoot({ previous, add: s.signers.map((x) => x.publicKey), remove: o.remove, threshold, onlineKeyHex: repo.onlineKey, expiresMs: Date.now() + parseDuration(o.expires) }),
          );
          await signMetadata(root, s.signers);
          // The first root comes with empty targets; every later one with the current targets
          // re-signed under it, since only the current root's signatures count (trusted-root.ts).
          if (previous && !repo.targets) throw new UsageError("the coordinator presents no targets metadata for this organization: refusing to change its root");
          const targets = repo.targets
            ? resignedTargets(repo.targets, parseDuration(DEFAULT_TARGETS_EXPIRY))
            : new Metadata(new Targets({ version: 1, specVersion: SPEC_VERSION, expires: tufDate(Date.now() + parseDuration(o.expires)) }));
          const targetsKeys = new Set(root.signed.roles.targets?.keyIDs ?? []);
          await signMetadata(targets, s.signers.filter((x) => targetsKeys.has(x.keyId)));
          const targetsJson = JSON.stringify(targets.toJSON());
          const res = await client.updateRoot({ rootJson: JSON.stringify(root.toJSON()), targetsJson });
          await pinRoots(target(), [...(await pinnedRoots(target())), root]);
          const resigned = previous ? `; targets re-signed under it as version ${targets.signed.version}` : "";
          out(`root version ${res.version}: ${root.signed.roles.root?.keyIDs.length} signing keys, threshold ${root.signed.roles.root?.threshold}${resigned}\n`);
          for (const x of s.signers) out(`  ${x.keyId}  ${x.label}\n`);
        } finally {
          s.close();
        }
      }),
  );

  keys
    .command("ls")
    .description("list the signing keys of this organization's current root")
    .option("--json", "print JSON")
    .action(
      (o: { json?: boolean }) =>
        run(async (out) => {
          const repo = await verifiedRepository(target(), await serviceClient(target(), adminv1.ReleaseService));
          if (!repo.root) throw new UsageError("this organization has no signing keys yet: run `flotilla signing-key add`");
          const root = repo.root.signed;
          const rows = Object.values(root.keys).map((k) => ({
            keyId: k.keyID,
            publicKey: k.keyVal.public ?? "",
            roles: Object.entries(root.roles).filter(([, r]) => r.keyIDs.includes(k.keyID)).map(([n]) => n),
          }));
          if (o.json) return out(json({ version: root.version, threshold: root.roles.targets?.threshold, expires: root.expires, keys: rows }));
          out(`root version ${root.version}, threshold ${root.roles.targets?.threshold}, expires ${root.expires}\n`);
          out(table(["KEY ID", "ROLES", "PUBLIC KEY"], rows.map((r) => [r.keyId, r.roles.join(","), r.publicKey])));
        }),
    );

  const release = program.command("release").description("signed releases: create, list and remove");
  withSigningOptions(
    release
      .command("create [file]")
      .description("upload an artifact (or, with --nixos, a system closure) and sign it into the organization's targets as a release")
      .requiredOption("--name <name>", "release name, e.g. webapp")
      .requiredOption("--version <version>", "human version, e.g. 1.4.0")
      .option("--kind <kind>", "bundle, nixos or agent", "bundle")
      .option("--run <command>", "bundle: command line to run, relative to the release directory")
      .option("--restart <when>", "bundle: always, on-failure or never")
      .option("--single-file", "bundle: the artifact is one executable, not a tarball")
      .option("--arch <list>", "architectures (uname -m), comma-separated; default any")
      .option("--health-http <url>", "health check: GET must answer 2xx")
      .option("--health-command <cmd>", "health check: command that must exit 0")
      .option("--health-up-seconds <n>", "health check: the process must stay up this long")
      .option("--health-window-seconds <n>", "how long health checks may take")
      .option("--nixos <path>", "a NixOS system (./result or its store path): copied to the organization's Nix cache and released as kind nixos")
      .option("--unit <units>", "nixos: systemd units, comma-separated, that `device restart|stop|start` act on")
      .option("--allow-downgrade", "let devices running a newer release of this name install this one")
      .option("--expires <duration>", "how long the new targets metadata is valid", DEFAULT_TARGETS_EXPIRY),
  ).action(
    (fileArg: string | undefined, o: SigningOpts & Record<string, string | boolean | undefined>) =>
      run(async (out) => {
        let file = fileArg;
        let nixPublicKeys: string[] | undefined;
        if (typeof o.nixos === "string") {
          if (file) throw new UsageError("give a FILE or --nixos PATH, not both");
          const nixos = await prepareNixosRelease(target(), o.nixos, String(o.name), (t) => process.stderr.write(t));
          Object.assign(o, { kind: "nixos", storePath: nixos.storePath });
          nixPublicKeys = nixos.nixPublicKeys;
          file = nixos.artifact;
        }
        if (!file) throw new UsageError("release create needs a FILE to release, or --nixos PATH");
        const client = await serviceClient(target(), adminv1.ReleaseService);
        const current = await SignedTargets.load(client, target());
        // Before uploading anything: are the keys to sign it at hand?
        (await current.signers(target(), o)).close();
        const meta = buildMeta(o, await current.nextCounter(client, String(o.name)), nixPublicKeys);
        const { sha256, length } = await uploadArtifact(target(), file, (line) => process.stderr.write(line));
        const path = releaseTargetPath(meta, basename(file));
        const version = await current.publish(client, target(), [{ path, length, sha256, meta }], o, parseDuration(String(o.expires)));
        out(`released ${meta.name} ${meta.version} (#${meta.counter}) as ${path}, sha256 ${sha256}; targets version ${version}\n`);
      }),
  );

  release
    .command("ls")
    .description("list releases")
    .option("--name <name>", "only this release name")
    .option("--json", "print JSON")
    .action(
      (o: { name?: string; json?: boolean }) =>
        run(async (out) => {
          const { releases } = await (await serviceClient(target(), adminv1.ReleaseService)).listReleases({ name: o.name ?? "" });
          if (o.json) return out(json(releases.map(releaseJson)));
          out(table(["NAME", "VERSION", "#", "KIND", "SIZE", "SHA256", "CREATED"], releases.map((r) => {
            const j = releaseJson(r);
            return [j.name, j.version, String(j.counter), j.kind, String(j.length), j.sha256.slice(0, 16), j.createdAt ?? ""];
          })));
        }),
    );

  withSigningOptions(
    release
      .command("reissue <release>")
      .description("sign an earlier release (NAME@VERSION or NAME@#COUNTER) again, unchanged but for a new highest counter, so devices that run a later one may return to it")
      .option("--expires <duration>", "how long the new targets metadata is valid", DEFAULT_TARGETS_EXPIRY),
  ).action(
    (ref: string, o: SigningOpts & { expires: string }) =>
      run(async (out) => {
        const { name, version } = parseReleaseRef(ref);
        const client = await serviceClient(target(), adminv1.ReleaseService);
        const current = await SignedTargets.load(client, target());
        const signed = current.releases(name);
        const byCounter = /^#(\d{1,15})$/.exec(version);
        const original = byCounter ? signed.find((r) => r.meta.counter === Number(byCounter[1])) : signed.filter((r) => r.meta.version === version).at(-1);
        if (!original) throw new ExitError(`no signed release ${name}@${version}`, 5);
        const copy = reissuedTarget(original, await current.nextCounter(client, name));
        const targetsVersion = await current.publish(client, target(), [copy], o, parseDuration(o.expires));
        out(`re-signed ${name} ${original.meta.version} (#${original.meta.counter}) as #${copy.meta.counter} (${copy.path}); targets version ${targetsVersion}\n`);
        out(`devices running a later counter may now return to it: flotilla device deploy DEVICE ${name}@#${copy.meta.counter}\n`);
      }),
  );

  withSigningOptions(
    release
      .command("rm <release>")
      .description(
        "remove a release (NAME@VERSION or NAME@#COUNTER): the coordinator stops offering it and new targets metadata without it is signed; refused while devices run it or are told to, unless --force",
      )
      .option("--force", "remove it although devices run it (they keep running it) or are told to (they are told to run what they run)")
      .option("--expires <duration>", "how long the new targets metadata is valid", DEFAULT_TARGETS_EXPIRY),
  ).action(
    (ref: string, o: SigningOpts & { force?: boolean; expires: string }) =>
      run(async (out) => {
        const { name, version } = parseReleaseRef(ref);
        const client = await serviceClient(target(), adminv1.ReleaseService);
        // First only the check: a release in use is refused before anything is signed.
        const checked = await client.removeRelease({ name, version, force: o.force === true });
        const path = checked.release?.targetPath ?? "";
        const current = await SignedTargets.load(client, target());
        if (!(path in current.metadata.signed.targets)) throw new ExitError(`the signed targets do not list ${path}`, 5);
        const targetsJson = await current.signNext(target(), [], [path], o, parseDuration(o.expires));
        const res = await client.removeRelease({ name, version, force: o.force === true, targetsJson });
        out(`removed ${name} ${res.release?.version} (#${res.release?.counter}), ${path}; targets version ${res.targetsVersion}\n`);
        if (res.running.length > 0) out(`still running it: ${res.running.join(", ")}\n`);
        if (res.told.length > 0) out(`told to run what they run instead: ${res.told.join(", ")}\n`);
        out("its artifact is deleted by the next garbage collection: flotilla coordinator gc\n");
      }),
  );

  const device = program.commands.find((c) => c.name() === "device") ?? program.command("device");
  device
    .command("deploy <device> <release>")
    .description("make a release (NAME@VERSION, or NAME@#COUNTER) the one a device runs")
    .action(
      (ref: string, spec: string) =>
        run(async (out) => {
          const res = await (await serviceClient(target(), adminv1.ReleaseService)).deployRelease({ device: ref, ...parseReleaseRef(spec) });
          out(`${ref}: desired ${res.release?.name} ${res.release?.version} (#${res.release?.counter})\n`);
        }),
    );
}

/** NAME@VERSION or NAME@#COUNTER. */
function parseReleaseRef(spec: string): { name: string; version: string } {
  const at = spec.lastIndexOf("@");
  if (at <= 0 || at === spec.length - 1) throw new UsageError(`expected NAME@VERSION, got ${JSON.stringify(spec)}`);
  return { name: spec.slice(0, at), version: spec.slice(at + 1) };
}

function buildMeta(o: Record<string, string | boolean | undefined>, counter: number, nixPublicKeys?: string[]): ReleaseMeta {
  const num = (v: string | boolean | undefined) => (v === undefined ? undefined : Number(v));
  const health = {
    http: o.healthHttp,
    command: o.healthCommand,
    upSeconds: num(o.healthUpSeconds),
    windowSeconds: num(o.healthWindowSeconds),
  };
  const hasHealth = Object.values(health).some((v) => v !== undefined);
  const raw = {
    name: o.name,
    version: o.version,
    counter,
    kind: o.kind,
    arch: typeof o.arch === "string" ? o.arch.split(",").map((a) => a.trim()).filter(Boolean) : [],
    run: o.run,
    restart: o.restart,
    singleFile: o.singleFile === true ? true : undefined,
    health: hasHealth ? JSON.parse(JSON.stringify(health)) as unknown : undefined,
    storePath: o.storePath,
    nixPublicKeys,
    units: typeof o.unit === "string" ? o.unit.split(",").map((u) => u.trim()).filter(Boolean) : undefined,
    allowDowngrade: o.allowDowngrade === true ? true : undefined,
  };
  try {
    return parseReleaseMeta(JSON.parse(JSON.stringify(raw)));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

