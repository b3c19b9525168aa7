import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { adminv1, MAX_FAILOVER_URLS, pinnedRequest, readBody, withFailoverUrls } from "@flotilla/protocol";
import { adminBearer, adminClient, login, normalizeUrl, serviceClient, type AdminTarget } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import { UsageError } from "../errors.ts";
import { json, parseDuration, parseLabels, table } from "../output.ts";
import type { Run } from "../run.ts";
import { joinStringNamingRoot, verifiedRepository } from "../signing/trusted-root.ts";

/** login and join tokens: who may manage the fleet and how machines join it. */
export function registerAccessCommands(program: Command, target: () => AdminTarget, run: Run): void {
  program
    .command("login")
    .description("log in to a coordinator with this admin key (the first owner uses the setup code)")
    .option("--setup-code <code>", "the one-time owner setup code printed at the coordinator's first start")
    .option("--key-name <name>", "a name for this key when it is registered", "")
    .action((opts: { setupCode?: string; keyName: string }) =>
      run(async (out) => {
        const t = target();
        if (!t.coordinator) throw new UsageError("login needs --coordinator URL");
        const url = normalizeUrl(t.coordinator);
        const entry = await login(Credentials.of(t), url, { setupCode: opts.setupCode, keyName: opts.keyName, organization: t.org });
        const role = t.org ? entry.orgSessions?.[t.org]?.role : entry.role;
        out(`logged in to ${url} as ${role} of organization ${t.org ?? entry.organization?.name ?? "?"}\n`);
      }),
    );

  program
    .command("login-link")
    .description("print a one-time link that logs this key into the web console (valid 10 minutes, for one use)")
    .action(() =>
      run(async (out) => {
        const auth = await adminBearer(target());
        const res = await pinnedRequest({ method: "POST", url: `${auth.url}/auth/login-link`, pin: auth.pin, headers: { authorization: `Bearer ${auth.token}` }, timeoutMs: 30_000 });
        const body = JSON.parse(await readBody(res)) as { token?: string; path?: string; expiresAt?: string; error?: string };
        if (res.statusCode !== 200 || !body.token) throw new Error(`the coordinator refused a login link: ${body.error ?? `HTTP ${res.statusCode}`}`);
        out(`Open this link in a browser before ${body.expiresAt} (it works once):\n${auth.url}${body.path ?? "/login-link"}#${body.token}\n`);
      }),
    );

  const tokens = program.command("join-token").description("tokens that let new machines enroll");
  tokens
    .command("create")
    .description("create a join token; prints the join string alone on the last line (it names the organization's signing root, as this admin verified it)")
    .option("--labels <k=v,...>", "labels every device enrolled with it gets", "")
    .option("--uses <n>", "how many devices may enroll with it (0: unlimited)", "1")
    .option("--expires <duration>", "validity, e.g. 1h, 7d", "24h")
    .option("--auto-approve", "devices are approved at once instead of waiting as pending")
    .option(
      "--coordinator-url <url>",
      "the address agents should dial, if not the coordinator's own; given again, more addresses (other replicas) agents fail over to",
      (url: string, urls: string[]) => [...urls, url],
      [] as string[],
    )
    .action((opts: { labels: string; uses: string; expires: string; autoApprove?: boolean; coordinatorUrl: string[] }) =>
      run(async (out) => {
        const uses = Number(opts.uses);
        if (!Number.isInteger(uses) || uses < 0 || uses > 1_000_000) throw new UsageError("--uses must be a whole number from 0");
        const urls = opts.coordinatorUrl.map(normalizeUrl);
        if (urls.length > 1 + MAX_FAILOVER_URLS) throw new UsageError(`--coordinator-url: at most ${1 + MAX_FAILOVER_URLS} addresses`);
        // The organization's signing root as this admin verified it (not as the coordinator says),
        // checked before the token exists: the agent will trust that root and no other.
        const { root } = await verifiedRepository(target(), await serviceClient(target(), adminv1.ReleaseService));
        const res = await (await adminClient(target())).createJoinToken({
          labels: parseLabels(opts.labels),
          usesAllowed: uses,
          expiresInSeconds: BigInt(Math.round(parseDuration(opts.expires) / 1000)),
          autoApprove: opts.autoApprove ?? false,
          coordinatorUrl: urls[0] ?? "",
        });
        const t = res.token;
        out(
          `join token ${t?.id}: ${uses || "unlimited"} use(s), expires ${t?.expiresAt ? new Date(timestampMs(t.expiresAt)).toISOString() : "?"}` +
            `${opts.autoApprove ? ", auto-approve" : ""}\n` +
            `on each machine: flotilla agent --join '<join string>' --state-dir /var/lib/flotilla-agent\n` +
            `${withFailoverUrls(joinStringNamingRoot(res.joinString, root), urls.slice(1))}\n`,
        );
      }),
    );
  tokens
    .command("ls")
    .description("list join tokens")
    .option("--json", "print JSON")
    .action((opts: { json?: boolean }) =>
      run(async (out) => {
        const { tokens: list } = await (await adminClient(target())).listJoinTokens({});
        const rows = list.map((t) => ({
          id: t.id,
          labels: t.labels,
          uses: t.uses,
          usesAllowed: t.usesAllowed,
          autoApprove: t.autoApprove,
          revoked: t.revoked,
          expiresAt: t.expiresAt ? new Date(timestampMs(t.expiresAt)).toISOString() : null,
        }));
        out(
          opts.json
            ? json(rows)
            : table(
                ["ID", "USES", "EXPIRES", "AUTO-APPROVE", "REVOKED", "LABELS"],
                rows.map((r) => [r.id, `${r.uses}/${r.usesAllowed || "∞"}`, r.expiresAt ?? "", String(r.autoApprove), String(r.revoked), Object.entries(r.labels).map(([k, v]) => `${k}=${v}`).join(",")]),
              ),
        );
      }),
    );
  tokens
    .command("revoke <id>")
    .description("revoke a join token; devices already enrolled stay")
    .action((id: string) =>
      run(async (out) => {
        await (await adminClient(target())).revokeJoinToken({ id });
        out(`revoked join token ${id}\n`);
      }),
    );
}
