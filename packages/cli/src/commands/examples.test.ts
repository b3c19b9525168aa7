/**
 * Every command's --help ends with examples, and every list and show command can print JSON:
 * a walk over the whole program, so a new command without them fails here.
 */
import { Command } from "commander";
import { describe, expect, it } from "vitest";
import { registerCommands } from "../main.ts";
import { commandPath, EXAMPLES } from "./examples.ts";

async function program(): Promise<Command> {
  const p = new Command("flotilla");
  await registerCommands(
    p,
    () => {
      throw new Error("no configuration in this test");
    },
    {},
    async () => {},
  );
  return p;
}

function every(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(every)];
}

function helpOf(cmd: Command): string {
  let text = "";
  cmd.configureOutput({ writeOut: (s) => (text += s), writeErr: (s) => (text += s) });
  cmd.outputHelp();
  return text;
}

const root = await program();

describe("the CLI's help", () => {
  const commands = every(root);

  it("shows examples on every command", () => {
    const without = commands.filter((c) => !/\nExamples:\n {2}\$ flotilla/.test(helpOf(c)) && !/\nExamples:\n {2}\$ ssh /.test(helpOf(c)));
    expect(without.map(commandPath)).toEqual([]);
  });

  it("has no examples for commands that do not exist", () => {
    const paths = new Set(commands.map(commandPath));
    expect(Object.keys(EXAMPLES).filter((k) => !paths.has(k))).toEqual([]);
  });

  it("offers --json on every list and show command", () => {
    const listing = commands.filter((c) => ["ls", "show", "verify", "url"].includes(c.name()) && commandPath(c) !== "coordinator verify");
    const without = listing.filter((c) => !c.options.some((o) => o.long === "--json"));
    expect(listing.length).toBeGreaterThan(10);
    expect(without.map(commandPath)).toEqual([]);
  });
});
