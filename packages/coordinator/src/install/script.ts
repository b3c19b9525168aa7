/**
 * /install.sh: a POSIX sh script that installs the agent from this coordinator on a machine
 * that has only curl and a join string (docs/install.md):
 *
 *   curl -fsSL https://coordinator:7700/install.sh | sudo sh -s -- --join 'flotilla-join-v1....'
 *
 * It downloads /install/flotilla-linux-<arch>, checks it against the SHA-256 written into the
 * script, installs it as /usr/local/bin/flotilla with flotilla-agent.service, the join string in
 * /etc/flotilla/join (mode 0600) and /etc/flotilla/agent.toml, and starts the agent under
 * systemd. With --root DIR every path is under DIR and nothing is started (images, tests).
 */
import { agentToml, agentUnit } from "./units.ts";

/** Where /install.sh puts the executable (under --root). */
export const INSTALLED_EXECUTABLE = "/usr/local/bin/flotilla";

export interface ScriptOptions {
  /** The coordinator's address as agents dial it, without a trailing slash. */
  url: string;
  /** The SHA-256 (hex) of each architecture's executable this coordinator serves. */
  sha256: { x86_64?: string; aarch64?: string };
}

/** Quotes a value for sh: single quotes, each ' as '\''. */
function shQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

export function installScript(o: ScriptOptions): string {
  return `#!/bin/sh
# Installs the Flotilla agent from the coordinator at ${o.url}, which served this script:
#   curl -fsSL ${o.url}/install.sh | sudo sh -s -- --join 'flotilla-join-v1....'
# Options: --join STRING (or FLOTILLA_JOIN; from \`flotilla join-token create\`), --no-start,
# --root DIR (install under DIR instead of /, start nothing).
set -eu
url=${shQuote(o.url)}
join="\${FLOTILLA_JOIN:-}"
root=
start=yes
fail() { echo "install.sh: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --join) [ $# -ge 2 ] || fail "--join needs a join string"; join=$2; shift 2 ;;
    --join=*) join=\${1#--join=}; shift ;;
    --root) [ $# -ge 2 ] || fail "--root needs a directory"; root=$2; shift 2 ;;
    --root=*) root=\${1#--root=}; shift ;;
    --no-start) start=no; shift ;;
    *) fail "unknown option $1 (use --join STRING, --root DIR, --no-start)" ;;
  esac
done
[ -n "$join" ] || fail "a join string is needed: --join 'flotilla-join-v1....' (from flotilla join-token create)"
case "$join" in
  flotilla-join-v1.*) ;;
  *) fail "that is not a join string: it starts with flotilla-join-v1." ;;
esac
case "$join" in
  *[!A-Za-z0-9._-]*) fail "that is not a join string: it has characters no join string has" ;;
esac
machine=$(uname -m)
case "$machine" in
  x86_64|amd64) arch=x86_64; sum=${shQuote(o.sha256.x86_64 ?? "")} ;;
  aarch64|arm64) arch=aarch64; sum=${shQuote(o.sha256.aarch64 ?? "")} ;;
  *) fail "there is no flotilla executable for $machine (only x86_64 and aarch64)" ;;
esac
[ -n "$sum" ] || fail "the coordinator at $url has no flotilla executable for $arch (its --install-dir lacks flotilla-linux-$arch)"
command -v curl >/dev/null 2>&1 || fail "curl is needed"
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then fail "run it as root (| sudo sh -s -- ...), or with --root DIR"; fi

bin="$root${INSTALLED_EXECUTABLE}"
etc="$root/etc/flotilla"
mkdir -p "\${bin%/*}" "$etc" "$root/etc/systemd/system"
tmp="$bin.download.$$"
trap 'rm -f "$tmp" "$etc/join.new"' EXIT
curl -fsSL -o "$tmp" "$url/install/flotilla-linux-$arch" || fail "could not download $url/install/flotilla-linux-$arch"
got=$(sha256sum "$tmp" | cut -d ' ' -f 1)
[ "$got" = "$sum" ] || fail "the download's SHA-256 is $got, not $sum: nothing installed"
chmod 0755 "$tmp"
version=$("$tmp" --version) || fail "the downloaded executable does not run on this machine"
mv -f "$tmp" "$bin"

# The join string is a secret: readable by root alone, written whole or not at all.
(umask 077 && printf 'FLOTILLA_JOIN=%s\\n' "$join" >"$etc/join.new")
mv -f "$etc/join.new" "$etc/join"
[ -f "$etc/agent.toml" ] || cat >"$etc/agent.toml" <<'FLOTILLA_AGENT_TOML'
${agentToml}FLOTILLA_AGENT_TOML
cat >"$root/etc/systemd/system/flotilla-agent.service" <<'FLOTILLA_AGENT_UNIT'
${agentUnit(INSTALLED_EXECUTABLE)}FLOTILLA_AGENT_UNIT

if [ -z "$root" ] && [ "$start" = yes ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable flotilla-agent.service >/dev/null 2>&1
  systemctl restart flotilla-agent.service
  echo "flotilla $version installed; the agent is running (journalctl -u flotilla-agent)"
else
  echo "flotilla $version installed in \${root:-/}; start the agent with: systemctl enable --now flotilla-agent"
fi
`;
}
