import { create } from "@bufbuild/protobuf";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { adminv1, fingerprint, formatOpenSshPublicKey, nodeId, parseAnyPublicKey } from "@flotilla/protocol";
import { adminClient, serviceClient, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { json, parseDuration, table } from "../output.ts";
import type { Run } from "../run.ts";

const iso = (t: Timestamp | undefined) => (t ? new Date(timestampMs(t)).toISOString() : "");

/** A password from the terminal (not echoed) or, in scripts, the first line of standard input. */
async function readPassword(): Promise<string> {
  if (!process.stdin.isTTY) {
    let text = "";
    for await (const chunk of process.stdin) text += String(chunk);
    return text.split("\n")[0] ?? "";
  }
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  process.stderr.write("password: ");
  const muted = rl as unknown as { _writeToOutput: (s: string) => void };
  muted._writeToOutput = () => {};
  const answer = await new Promise<string>((resolve) => rl.question("", resolve));
  rl.close();
  process.stderr.write("\n");
  return answer;
}

/** A public key given as an OpenSSH line, a node id, or a file holding either. */
async function publicKeyArg(text: string): Promise<string> {
  if (text.startsWith("ssh-") || /^[A-Za-z0-9_-]{43}$/.test(text)) return text;
  let content: string;
  try {
    content = await readFile(text, "utf8");
  } catch {
    throw new UsageError(`cannot read public key file ${text}`);
  }
  try {
    return formatOpenSshPublicKey(parseAnyPublicKey(content.trim()));
  } catch (err) {
    throw new UsageError(`${text}: ${(err as Error).message}`);
  }
}

/** Organizations, members, admin keys, API tokens and the audit log. */
export function registerOrgCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const client = () => adminClient(target());

  const org = program.command("org").description("organizations");
  org
    .command("create <name>")
    .description("create an organization; you become its owner (use it with --org NAME)")
    .action((name: string) =>
      run(async (out) => {
        const res = await (await client()).createOrganization({ name });
        out(`created organization ${res.organization?.name} (${res.organization?.id})\n`);
      }),
    );
  org
    .command("ls")
    .description("the organizations your key belongs to, with your role in each")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const res = await (await client()).listOrganizations({});
        const rows = res.organizations.map((o, i) => ({ id: o.id, name: o.name, role: res.roles[i] ?? "" }));
        out(opts.json ? json(rows) : table(["NAME", "ROLE", "ID"], rows.map((r) => [r.name, r.role, r.id])));
      }),
    );

  const retention = (r: adminv1.Retention | undefined, asJson: boolean | undefined, out: (s: string) => void) => {
    const res = r ?? create(adminv1.RetentionSchema);
    const days = (ms: bigint) => `${Number(ms) / 86_400_000}d`;
    const row = { logsMs: Number(res.logsMs), metricsMs: Number(res.metricsMs), logsOwn: res.logsOwn, metricsOwn: res.metricsOwn };
    out(
      asJson
        ? json(row)
        : `logs kept ${days(res.logsMs)}${res.logsOwn ? "" : " (coordinator default)"}, metric samples kept ${days(res.metricsMs)}${res.metricsOwn ? "" : " (coordinator default)"}\n`,
    );
  };
  const telemetry = () => serviceClient(target(), adminv1.TelemetryService);
  org
    .command("show")
    .description("the organization's settings: how long its devices' logs and metric samples are kept")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) => run(async (out) => retention((await (await telemetry()).getRetention({})).retention, opts.json, out)));
  org
    .command("set")
    .description("change the organization's settings: log and metric retention (the coordinator's --log-retention-ms is the default)")
    .option("--log-retention <duration>", "keep device log lines this long, e.g. 7d, or 'default'")
    .option("--metric-retention <duration>", "keep metric samples this long, e.g. 30d, or 'default'")
    .option("--json", "print the settings in force as JSON")
    .action((opts: { logRetention?: string; metricRetention?: string; json?: boolean }) =>
      run(async (out) => {
        if (!opts.logRetention && !opts.metricRetention) throw new UsageError("nothing to set: give --log-retention and/or --metric-retention");
        const ms = (v: string | undefined) => (v && v !== "default" ? BigInt(parseDuration(v)) : 0n);
        const res = await (await telemetry()).setRetention({
          logsMs: ms(opts.logRetention),
          metricsMs: ms(opts.metricRetention),
          resetLogs: opts.logRetention === "default",
          resetMetrics: opts.metricRetention === "default",
        });
        retention(res.retention, opts.json, out);
      }),
    );

  const member = program.command("member").description("members of the organization and their roles");
  member
    .command("add <name>")
    .description("add a member (e.g. alice@acme) with a role")
    .option("--role <role>", "owner, admin, deployer or viewer", "viewer")
    .option("--ssh-key <file>", "an OpenSSH ed25519 public key (file or line) the member logs in with")
    .option("--password", "set a web UI password (asked for, or read from standard input)")
    .action((name: string, opts: { role: string; sshKey?: string; password?: boolean }) =>
      run(async (out) => {
        const publicKey = opts.sshKey ? await publicKeyArg(opts.sshKey) : "";
        const password = opts.password ? await readPassword() : "";
        const res = await (await client()).addMember({ name, role: opts.role, publicKey, password });
        out(`added ${res.member?.role} ${res.member?.name}\n`);
      }),
    );
  member
    .command("ls")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const { members } = await (await client()).listMembers({});
        const rows = members.map((m) => ({ id: m.id, name: m.name, role: m.role, keys: m.keys, password: m.hasPassword, createdAt: iso(m.createdAt) }));
        out(opts.json ? json(rows) : table(["NAME", "ROLE", "KEYS", "PASSWORD", "ID"], rows.map((r) => [r.name, r.role, String(r.keys), r.password ? "yes" : "no", r.id])));
      }),
    );
  member
    .command("rm <member>")
    .description("remove a member: their keys and sessions stop working at once")
    .action((ref: string) =>
      run(async (out) => {
        await (await client()).removeMember({ member: ref });
        out(`removed ${ref}\n`);
      }),
    );

  const addKey = (key: string, opts: { name: string; role: string }) =>
    run(async (out) => {
      const res = await (await client()).addAdminKey({ publicKey: await publicKeyArg(key), name: opts.name, role: opts.role });
      out(`added ${res.key?.role} key ${res.key?.name} (${fingerprint(res.key?.publicKey ?? new Uint8Array())})\n`);
    });
  const listKeys = (opts: { json?: boolean }) =>
    run(async (out) => {
      const { keys } = await (await client()).listAdminKeys({});
      const rows = keys.map((k) => ({ id: k.id, name: k.name, member: k.member, role: k.role, key: nodeId(k.publicKey), fingerprint: fingerprint(k.publicKey) }));
      out(opts.json ? json(rows) : table(["ID", "NAME", "MEMBER", "ROLE", "FINGERPRINT"], rows.map((r) => [r.id, r.name, r.member, r.role, r.fingerprint])));
    });
  const addKeyHelp = "register another admin key: an OpenSSH ed25519 public key (file or line) or a node id";

  const key = program.command("key").description("admin keys: the keys admins log in with (add, ls, revoke)");
  key
    .command("add <key>")
    .description(addKeyHelp)
    .option("--name <name>", "a name for the key", "")
    .option("--role <role>", "owner, admin, deployer or viewer", "admin")
    .action(addKey);
  key.command("ls").description("list the organization's admin keys").option("--json", "print JSON").action(listKeys);
  key
    .command("revoke <key>")
    .description("revoke an admin key (id or fingerprint): its sessions end at once")
    .action((ref: string) =>
      run(async (out) => {
        await (await client()).revokeAdminKey({ key: ref });
        out(`revoked ${ref}\n`);
      }),
    );
  // The earlier names of `key add` and `key ls`, kept working for scripts; not listed in --help.
  const admin = program.command("admin", { hidden: true }).description("earlier names of `key add` and `key ls`");
  admin
    .command("add-key <key>")
    .description(`${addKeyHelp} (now \`flotilla key add\`)`)
    .option("--name <name>", "a name for the key", "")
    .option("--role <role>", "owner, admin, deployer or viewer", "admin")
    .action(addKey);
  admin.command("ls-keys").description("list admin keys (now `flotilla key ls`)").option("--json", "print JSON").action(listKeys);

  const token = program.command("token").description("API tokens for CI (use with FLOTILLA_TOKEN)");
  token
    .command("create <name>")
    .description("create an API token; prints the token alone on its last line, once")
    .option("--role <role>", "the token's role", "deployer")
    .option("--expires <duration>", "validity, e.g. 90d", "90d")
    .action((name: string, opts: { role: string; expires: string }) =>
      run(async (out) => {
        const res = await (await client()).createApiToken({
          name,
          role: opts.role,
          expiresInSeconds: BigInt(Math.round(parseDuration(opts.expires) / 1000)),
        });
        out(`API token ${res.token?.name} (${res.token?.role}), expires ${iso(res.token?.expiresAt)}; shown once:\n${res.secret}\n`);
      }),
    );
  token
    .command("ls")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const { tokens } = await (await client()).listApiTokens({});
        const rows = tokens.map((t) => ({ id: t.id, name: t.name, role: t.role, expiresAt: iso(t.expiresAt), revoked: t.revoked, createdBy: t.createdBy }));
        out(opts.json ? json(rows) : table(["ID", "NAME", "ROLE", "EXPIRES", "REVOKED", "CREATED BY"], rows.map((r) => [r.id, r.name, r.role, r.expiresAt, String(r.revoked), r.createdBy])));
      }),
    );
  token
    .command("revoke <token>")
    .description("revoke an API token (id or name); it stops working at once")
    .action((ref: string) =>
      run(async (out) => {
        await (await client()).revokeApiToken({ token: ref });
        out(`revoked ${ref}\n`);
      }),
    );

  const audit = program.command("audit").description("the organization's tamper-evident audit log");
  audit
    .command("ls")
    .option("--since <duration>", "only entries this recent, e.g. 24h")
    .option("--actor <actor>", "only entries by this actor, e.g. key:alice or token:ci")
    .option("--limit <n>", "at most this many (newest); says on stderr when older ones were left out", "1000")
    .option("--all", "every matching entry, page by page (an export with --json)")
    .option("--json", "print JSON")
    .action((opts: { since?: string; actor?: string; limit: string; all?: boolean; json?: boolean }) =>
      run(async (out) => {
        const since = opts.since ? Date.now() - parseDuration(opts.since) : undefined;
        const c = await client();
        const limit = opts.all ? 10_000 : Math.max(1, Number(opts.limit) || 1000);
        const entries: adminv1.AuditEntry[] = [];
        let pageToken = "";
        do {
          const page = await c.listAuditEntries({ since: since === undefined ? undefined : timestampFromMs(since), actor: opts.actor ?? "", limit, pageToken });
          // Pages go from the newest back; each page is oldest first.
          entries.unshift(...page.entries);
          pageToken = page.nextPageToken;
          if (pageToken && !opts.all) {
            process.stderr.write(`flotilla: showing the newest ${entries.length} matching entries; older ones match too: --all lists every one, --limit N more of the newest\n`);
            break;
          }
        } while (pageToken);
        const rows = entries.map((e) => ({ seq: Number(e.seq), time: iso(e.time), actor: e.actor, action: e.action, target: e.target, source: e.source, outcome: e.outcome, detail: e.detail, hash: e.hash }));
        out(opts.json ? json(rows) : table(["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "SOURCE", "OUTCOME"], rows.map((r) => [String(r.seq), r.time, r.actor, r.action, r.target, r.source, r.outcome])));
      }),
    );
  audit
    .command("verify")
    .description("check the hash chain: exits non-zero and names the first entry that was altered or deleted")
    .option("--json", "print the verdict as JSON (still exits non-zero when it does not verify)")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const res = await (await client()).verifyAuditLog({});
        if (opts.json) out(json({ ok: res.ok, entries: Number(res.entries), firstBadSeq: res.ok ? null : Number(res.firstBadSeq), problem: res.problem || null }));
        if (!res.ok) throw new Error(`audit log does not verify: ${res.problem} (entry ${res.firstBadSeq})`);
        if (!opts.json) out(`audit log verifies: ${res.entries} entries\n`);
      }),
    );
}
