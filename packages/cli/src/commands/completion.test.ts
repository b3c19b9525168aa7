import { execFileSync, spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { describe, expect, it } from "vitest";

const bin = resolve(import.meta.dirname, "../../bin/flotilla.js");
const tmp = useTempDir("flotilla-completion-");

function script(shell: string): string {
  return execFileSync(process.execPath, [bin, "completion", shell], { encoding: "utf8" });
}

/** What bash offers after `line` (the cursor at its end), with the script sourced. */
function bashComplete(file: string, line: string): string[] {
  const words = line.split(" ");
  const program = `source ${JSON.stringify(file)}; COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}; _flotilla; printf '%s\\n' "\${COMPREPLY[@]}"`;
  return execFileSync("bash", ["-c", program], { encoding: "utf8" }).split("\n").filter(Boolean);
}

describe("flotilla completion", () => {
  it("completes commands, subcommands and options in a real bash", () => {
    const file = join(tmp.path, "flotilla.bash");
    writeFileSync(file, script("bash"));
    expect(bashComplete(file, "flotilla dev")).toEqual(["device"]);
    expect(bashComplete(file, "flotilla device ap")).toEqual(["approve"]);
    expect(bashComplete(file, "flotilla --org acme rollout st")).toEqual(expect.arrayContaining(["start"]));
    expect(bashComplete(file, "flotilla release create --")).toEqual(expect.arrayContaining(["--name", "--version", "--kind", "--coordinator"]));
    // Unlisted earlier names are not offered.
    expect(bashComplete(file, "flotilla adm")).toEqual([]);
  });

  it("prints a fish script with a line per subcommand, and a zsh script over bashcompinit", () => {
    expect(script("fish")).toMatch(/complete -c flotilla -f -n '__fish_seen_subcommand_from device; and not __fish_seen_subcommand_from [^']*' -a 'approve'/);
    expect(script("zsh")).toMatch(/bashcompinit[\s\S]*complete -o default -F _flotilla flotilla/);
  });

  it("refuses another shell with one line and exit code 2", () => {
    const r = spawnSync(process.execPath, [bin, "completion", "tcsh"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe('error: no completion for "tcsh": choose bash, zsh or fish');
  });
});
