/**
 * The files an installed Flotilla consists of besides its executable: the systemd units and the
 * commented configuration files. One source for the .deb (scripts/package.mjs) and for the agent
 * that /install.sh installs, which differ only in where the executable lives.
 */

import { AGENT_NODE_OPTIONS } from "@flotilla/protocol";

/** flotilla-agent.service, running the executable at `exe`. */
export function agentUnit(exe: string): string {
  return `# The Flotilla agent (docs/install.md). It enrolls once with the join string in /etc/flotilla/join
# (FLOTILLA_JOIN=..., root only), then keeps its identity in /var/lib/flotilla-agent.
[Unit]
Description=Flotilla agent
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=-/etc/flotilla/join
# V8's young generation at 1 MiB semi-spaces instead of 16 (the idle agent's memory); the agent
# removes it from what it runs.
Environment=NODE_OPTIONS=${AGENT_NODE_OPTIONS}
ExecStart=${exe} agent --self-update true --config /etc/flotilla/agent.toml --state-dir \${STATE_DIRECTORY}
StateDirectory=flotilla-agent
StateDirectoryMode=0700
Restart=always
RestartSec=5s
# The services of bundle releases are the agent's children and outlive a restart of the agent.
KillMode=process
# The agent runs as root: it activates NixOS systems (switch-to-configuration writes /etc, /boot
# and setuid wrappers, and runs systemctl) and installs bundles wherever their releases say. So
# the file system, privileges, namespaces and devices stay open; what is closed below no
# activation needs.
LockPersonality=yes
ProtectClock=yes
ProtectKernelLogs=yes
RestrictRealtime=yes
SystemCallArchitectures=native
UMask=0022

[Install]
WantedBy=multi-user.target
`;
}

/** flotilla-coordinator.service, running the executable at `exe` as a dynamic system user. */
export function coordinatorUnit(exe: string): string {
  return `# The Flotilla coordinator (docs/install.md): its key, SQLite database and artifacts in
# /var/lib/flotilla-coordinator, its settings in /etc/flotilla/coordinator.toml and secrets
# (e.g. FLOTILLA_DATABASE_URL) in /etc/flotilla/coordinator.env (root only). The owner setup code
# of the first start is in \`journalctl -u flotilla-coordinator\`. It serves /install.sh with the
# executables beside its own (/usr/lib/flotilla).
[Unit]
Description=Flotilla coordinator
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
DynamicUser=yes
EnvironmentFile=-/etc/flotilla/coordinator.env
ExecStart=${exe} coordinator --config /etc/flotilla/coordinator.toml --data-dir \${STATE_DIRECTORY}
StateDirectory=flotilla-coordinator
StateDirectoryMode=0700
Restart=always
RestartSec=5s
UMask=0077
CapabilityBoundingSet=CAP_NET_BIND_SERVICE
AmbientCapabilities=CAP_NET_BIND_SERVICE
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service

[Install]
WantedBy=multi-user.target
`;
}

/** /etc/flotilla/agent.toml as installed: no settings, only how to make them. */
export const agentToml = `# Settings of the Flotilla agent (flotilla-agent.service). Every option of \`flotilla agent --help\`
# has a key here; flags and FLOTILLA_* variables override them (\`flotilla agent --print-config\`).
# The join string does not belong here: it goes in /etc/flotilla/join (mode 0600) as
#   FLOTILLA_JOIN=flotilla-join-v1....
#
# journal_units = ["nginx.service"]
# tunnel_ports = [22]
`;

/** /etc/flotilla/coordinator.toml as installed. */
export const coordinatorToml = `# Settings of the Flotilla coordinator (flotilla-coordinator.service). Every option of
# \`flotilla coordinator --help\` has a key here. Secrets (database_url) go in
# /etc/flotilla/coordinator.env (mode 0600) as FLOTILLA_DATABASE_URL=postgres://...
#
# listen = "0.0.0.0:7700"
# public_url = "https://fleet.example.com:7700"
# tls_cert = "/etc/flotilla/tls/cert.pem"
# tls_key = "/etc/flotilla/tls/key.pem"
`;
