import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { parsePathInfoJson, type ClosureEntry } from "@flotilla/protocol";

const exec = promisify(execFile);

/**
 * The closure of a store path in the admin's local store, every path with its NarHash and
 * NarSize, from `nix path-info --json --recursive`: what a NixOS release pins.
 */
export async function localClosure(storePath: string): Promise<ClosureEntry[]> {
  let stdout: string;
  try {
    ({ stdout } = await exec("nix", ["path-info", "--extra-experimental-features", "nix-command", "--json", "--recursive", storePath], { maxBuffer: 256 * 1024 * 1024 }));
  } catch (err) {
    const e = err as { stderr?: string; message?: string };
    const why = (e.stderr ?? e.message ?? String(err)).trim().split("\n").filter((l) => !l.startsWith("warning:")).pop() ?? "";
    throw new Error(`nix path-info ${storePath} failed: ${why}`);
  }
  try {
    return parsePathInfoJson(stdout);
  } catch (err) {
    throw new Error(`cannot read nix path-info's output for ${storePath}: ${err instanceof Error ? err.message : String(err)}`);
  }
}
