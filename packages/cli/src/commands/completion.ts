import type { Command } from "commander";
import { UsageError } from "../errors.ts";
import type { Run } from "../run.ts";

/** One command of the tree: its path of names, visible subcommands and long options. */
interface Node {
  path: string[];
  description: string;
  subcommands: { name: string; description: string }[];
  options: string[];
}

/** The commands and options `--help` shows, walked from the top: hidden ones are left out. */
export function commandTree(program: Command): Node[] {
  const nodes: Node[] = [];
  const walk = (cmd: Command, path: string[]) => {
    const help = cmd.createHelp();
    const subs = help.visibleCommands(cmd).filter((c) => c.name() !== "help");
    const options = help.visibleOptions(cmd).flatMap((o) => (o.long ? [o.long] : []));
    // Options of the top level (--coordinator, --org...) work after any subcommand too.
    if (path.length > 0) options.push(...(nodes[0]?.options ?? []));
    nodes.push({ path, description: cmd.description(), subcommands: subs.map((c) => ({ name: c.name(), description: c.description() })), options: [...new Set(options)] });
    for (const sub of subs) walk(sub, [...path, sub.name()]);
  };
  walk(program, []);
  return nodes;
}

const quote = (text: string) => `'${text.replace(/'/g, `'\\''`)}'`;

/**
 * Bash: the words each command path completes to, in one associative array; the completion
 * function follows the words typed so far through the tree, skipping options and their values.
 */
function bashScript(nodes: Node[]): string {
  // Keyed by the words from "flotilla" on: bash allows no empty key.
  const entries = nodes.map((n) => `  [${quote(["flotilla", ...n.path].join(" "))}]=${quote([...n.subcommands.map((s) => s.name), ...n.options].join(" "))}`);
  return `# flotilla completion for bash: source <(flotilla completion bash)
declare -gA _flotilla_words=(
${entries.join("\n")}
)
_flotilla() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" path=flotilla i w next
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    [[ "$w" == -* ]] && continue
    next="$path $w"
    [[ -n "\${_flotilla_words[$next]+x}" ]] && path="$next"
  done
  COMPREPLY=($(compgen -W "\${_flotilla_words[$path]}" -- "$cur"))
}
complete -o default -F _flotilla flotilla
`;
}

/** Zsh runs the bash function through bashcompinit. */
function zshScript(nodes: Node[]): string {
  return `# flotilla completion for zsh: source <(flotilla completion zsh)
autoload -U +X compinit && compinit
autoload -U +X bashcompinit && bashcompinit
${bashScript(nodes).split("\n").slice(1).join("\n")}`;
}

/** Fish: one `complete` line per subcommand and option, conditioned on the words typed before. */
function fishScript(nodes: Node[]): string {
  const lines = ["# flotilla completion for fish: flotilla completion fish | source"];
  const condition = (path: string[], children: string[]) => {
    if (path.length === 0) return "__fish_use_subcommand";
    const seen = path.map((p) => `__fish_seen_subcommand_from ${p}`).join("; and ");
    return children.length > 0 ? `${seen}; and not __fish_seen_subcommand_from ${children.join(" ")}` : seen;
  };
  for (const n of nodes) {
    const children = n.subcommands.map((s) => s.name);
    const when = quote(condition(n.path, children));
    for (const s of n.subcommands) lines.push(`complete -c flotilla -f -n ${when} -a ${quote(s.name)} -d ${quote(s.description)}`);
    if (n.path.length > 0) {
      for (const o of n.options) lines.push(`complete -c flotilla -n ${quote(condition(n.path, []))} -l ${quote(o.slice(2))}`);
    } else {
      for (const o of n.options) lines.push(`complete -c flotilla -l ${quote(o.slice(2))}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

const shells: Record<string, (nodes: Node[]) => string> = { bash: bashScript, zsh: zshScript, fish: fishScript };

/** The completion script for `shell`, made from the program's own command tree. */
export function completionScript(program: Command, shell: string): string {
  const make = shells[shell];
  if (!make) throw new UsageError(`no completion for ${JSON.stringify(shell)}: choose bash, zsh or fish`);
  return make(commandTree(program));
}

export function registerCompletionCommand(program: Command, run: Run): void {
  program
    .command("completion <shell>")
    .description("print a completion script for bash, zsh or fish")
    .addHelpText(
      "after",
      `
Examples:
  source <(flotilla completion bash)                       # this shell; add the line to ~/.bashrc to keep it
  source <(flotilla completion zsh)                        # zsh, the same way (~/.zshrc)
  flotilla completion fish > ~/.config/fish/completions/flotilla.fish`,
    )
    .action((shell: string) =>
      run(async (out) => {
        out(completionScript(program, shell));
      }),
    );
}
