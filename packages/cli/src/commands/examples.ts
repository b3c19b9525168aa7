/**
 * `--help` examples for every command, in one table so each reads like the others; a test walks
 * the program and fails for a command without them (examples.test.ts).
 */
import type { Command } from "commander";

/** Example command lines, by command path (as typed after `flotilla`). */
export const EXAMPLES: Record<string, string[]> = {
  "": ["flotilla up", "flotilla device ls", "flotilla release create ./app.tar.gz --name webapp --version 1.4.0 --run bin/webapp"],
  up: ["flotilla up", "flotilla up --data-dir ./.flotilla --listen 127.0.0.1:7700 --sim 50"],
  coordinator: ["flotilla coordinator --data-dir /var/lib/flotilla --listen 0.0.0.0:7700", "flotilla coordinator backup --to /backups/flotilla.tar"],
  "coordinator rotate-key": ["flotilla coordinator rotate-key --data-dir /var/lib/flotilla"],
  "coordinator backup": ["flotilla coordinator backup --data-dir /var/lib/flotilla --to /backups/flotilla-$(date +%F).tar"],
  "coordinator restore": ["flotilla coordinator restore /backups/flotilla-2026-11-30.tar --data-dir /var/lib/flotilla-restored"],
  "coordinator verify": ["flotilla coordinator verify --data-dir /var/lib/flotilla"],
  "coordinator gc": ["flotilla coordinator gc --dry-run", "flotilla coordinator gc --json"],
  agent: ["flotilla agent --join 'flotilla-join:...'", "flotilla agent --state-dir /var/lib/flotilla-agent", "flotilla agent --rejoin 'flotilla-join:...'  # re-home to another coordinator"],
  id: ["flotilla id", "flotilla id --state-dir /var/lib/flotilla-agent --ssh", "flotilla id --data-dir /var/lib/flotilla --pin"],
  login: ["flotilla login --coordinator https://fleet.example.com:7700 --setup-code ABCD-EFGH-IJKL-MNOP", "flotilla login --coordinator https://fleet.example.com:7700"],
  "login-link": ["flotilla login-link   # then open the printed link in a browser, once, within 10 minutes"],
  "join-token": ["flotilla join-token create --labels site=lab --auto-approve", "flotilla join-token ls"],
  "join-token create": ["flotilla join-token create", "flotilla join-token create --labels env=prod,site=berlin --uses 50 --expires 7d --auto-approve"],
  "join-token ls": ["flotilla join-token ls", "flotilla join-token ls --json"],
  "join-token revoke": ["flotilla join-token revoke tok_3f9a..."],
  device: ["flotilla device ls --selector env=prod", "flotilla device show kiosk-7"],
  "device ls": ["flotilla device ls", "flotilla device ls --selector 'env=prod,arch in (aarch64,x86_64)' --json"],
  "device show": ["flotilla device show kiosk-7", "flotilla device show kiosk-7 --json"],
  "device approve": ["flotilla device approve kiosk-7"],
  "device reject": ["flotilla device reject kiosk-7"],
  "device decommission": ["flotilla device decommission kiosk-7"],
  "device restart": ["flotilla device restart kiosk-7 webapp", "flotilla device restart --selector site=lab webapp --yes"],
  "device stop": ["flotilla device stop kiosk-7 webapp"],
  "device start": ["flotilla device start kiosk-7 webapp"],
  "device undeploy": ["flotilla device undeploy kiosk-7 webapp", "flotilla device undeploy kiosk-7 webapp --purge"],
  "device move": ["flotilla device move kiosk-7 --to-org acme", "flotilla --org globex device move kiosk-7 --to-org acme --ssh-agent"],
  "device label": ["flotilla device label set kiosk-7 env=prod site=berlin", "flotilla device label rm kiosk-7 site"],
  "device label set": ["flotilla device label set kiosk-7 env=prod site=berlin", "flotilla device label set --selector site=berlin --yes ring=canary"],
  "device label rm": ["flotilla device label rm kiosk-7 site", "flotilla device label rm --selector ring=canary --yes ring"],
  "device deploy": ["flotilla device deploy kiosk-7 webapp@1.4.0"],
  org: ["flotilla org create acme", "flotilla org ls"],
  "org create": ["flotilla org create acme", "flotilla --org acme device ls"],
  "org show": ["flotilla org show", "flotilla --org acme org show --json"],
  "org set": ["flotilla org set --log-retention 7d --metric-retention 30d", "flotilla org set --log-retention default"],
  "org ls": ["flotilla org ls", "flotilla org ls --json"],
  member: ["flotilla member add alice --role deployer", "flotilla member ls"],
  "member add": ["flotilla member add alice --role deployer"],
  "member ls": ["flotilla member ls", "flotilla member ls --json"],
  "member rm": ["flotilla member rm alice"],
  key: ["flotilla key add ~/.ssh/id_ed25519.pub --name laptop", "flotilla key ls"],
  "key add": ["flotilla key add ~/.ssh/id_ed25519.pub --name laptop", "flotilla key add 'ssh-ed25519 AAAA... bob@host' --role viewer"],
  "key ls": ["flotilla key ls", "flotilla key ls --json"],
  "key revoke": ["flotilla key revoke key_7c1e...", "flotilla key revoke SHA256:3f9a..."],
  admin: ["flotilla key add ~/.ssh/id_ed25519.pub  # now `flotilla key`"],
  "admin add-key": ["flotilla key add ~/.ssh/id_ed25519.pub  # now `flotilla key add`"],
  "admin ls-keys": ["flotilla key ls  # now `flotilla key ls`"],
  token: ["flotilla token create ci-deploy --role deployer --expires 90d", "FLOTILLA_TOKEN=flt_... flotilla release ls"],
  "token create": ["flotilla token create ci-deploy --role deployer --expires 90d"],
  "token ls": ["flotilla token ls", "flotilla token ls --json"],
  "token revoke": ["flotilla token revoke ci-deploy"],
  audit: ["flotilla audit ls --since 24h", "flotilla audit verify"],
  "audit ls": ["flotilla audit ls --since 24h --actor key:alice", "flotilla audit ls --all --json > audit-export.json"],
  "audit verify": ["flotilla audit verify", "flotilla audit verify --json"],
  "nix-key": ["flotilla nix-key create fleet-1", "flotilla nix-key ls"],
  "nix-key create": ["flotilla nix-key create fleet-1"],
  "nix-key import": ["flotilla nix-key import ./fleet-1.secret"],
  "nix-key trust": ["flotilla nix-key trust 'cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY='"],
  "nix-key ls": ["flotilla nix-key ls", "flotilla nix-key ls --json"],
  "nix-key rm": ["flotilla nix-key rm fleet-1"],
  "nix-cache": ["flotilla nix-cache url", "flotilla nix-cache push ./result"],
  "nix-cache url": ["flotilla nix-cache url", "flotilla nix-cache url --json"],
  "nix-cache push": ["flotilla nix-cache push ./result", "flotilla nix-cache push /nix/store/...-nixos-system-kiosk"],
  logs: ["flotilla logs kiosk-7 --since 1h", "flotilla logs --selector site=lab --unit webapp -f", "flotilla logs kiosk-7 --grep error --json"],
  metrics: ["flotilla metrics kiosk-7", "flotilla metrics kiosk-7 --samples 10 --json"],
  tunnel: ["ssh -o ProxyCommand='flotilla tunnel %h --port 22' admin@kiosk-7"],
  ssh: ["flotilla ssh admin@kiosk-7", "flotilla ssh kiosk-7 -- uptime"],
  "port-forward": ["flotilla port-forward kiosk-7 8080:80", "flotilla port-forward kiosk-7 5432:127.0.0.1:5432 --address 0.0.0.0"],
  "signing-key": ["flotilla signing-key add", "flotilla signing-key ls"],
  "signing-key add": ["flotilla signing-key add", "flotilla signing-key add --key-file ~/.ssh/id_ed25519 --key-file ./second.key --threshold 2"],
  "signing-key ls": ["flotilla signing-key ls", "flotilla signing-key ls --json"],
  release: ["flotilla release create ./app.tar.gz --name webapp --version 1.4.0 --run bin/webapp", "flotilla release ls"],
  "release create": [
    "flotilla release create ./app.tar.gz --name webapp --version 1.4.0 --run bin/webapp --health-http http://127.0.0.1:8080/healthz",
    "flotilla release create --kind nixos --nixos ./result --name kiosk-os --version 2026.11",
  ],
  "release ls": ["flotilla release ls", "flotilla release ls --name webapp --json"],
  "release reissue": ["flotilla release reissue webapp@1.4.0"],
  "release rm": ["flotilla release rm webapp@1.3.0", "flotilla release rm webapp@1.3.0 --force"],
  rollout: ["flotilla rollout start webapp@1.4.0 --selector env=prod --waves 1,10%,100%", "flotilla rollout watch ro_..."],
  "rollout plan": ["flotilla rollout plan webapp@1.4.0 --selector env=prod --waves 1,10%,100%"],
  "rollout start": ["flotilla rollout start webapp@1.4.0 --selector env=prod --waves 1,10%,100% --soak 10m --failure-threshold 2%"],
  "rollout watch": ["flotilla rollout watch ro_3f9a..."],
  "rollout ls": ["flotilla rollout ls", "flotilla rollout ls --json"],
  "rollout show": ["flotilla rollout show ro_3f9a...", "flotilla rollout show ro_3f9a... --state failed", "flotilla rollout show ro_3f9a... --json"],
  "rollout pause": ["flotilla rollout pause ro_3f9a..."],
  "rollout resume": ["flotilla rollout resume ro_3f9a..."],
  "rollout approve": ["flotilla rollout approve ro_3f9a..."],
  "rollout abort": ["flotilla rollout abort ro_3f9a...", "flotilla rollout abort ro_3f9a... --roll-back"],
  completion: ["flotilla completion bash > /etc/bash_completion.d/flotilla", "flotilla completion zsh > ~/.zfunc/_flotilla", "flotilla completion fish > ~/.config/fish/completions/flotilla.fish"],
  sim: ["flotilla sim --coordinator http://127.0.0.1:7700 --join 'flotilla-join:...' --devices 200 --fail-rate 2%"],
};

/** The path of `cmd` as typed after `flotilla` ("" for the program itself). */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(" ");
}

/** Adds an Examples section to the help of `program` and every command under it that has examples. */
export function addExamples(program: Command): void {
  const visit = (cmd: Command) => {
    const lines = EXAMPLES[commandPath(cmd)];
    if (lines) cmd.addHelpText("after", `\nExamples:\n${lines.map((l) => `  $ ${l}`).join("\n")}\n`);
    cmd.commands.forEach(visit);
  };
  visit(program);
}
