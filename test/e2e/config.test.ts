import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { expect, it } from "vitest";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

it("takes each option from a flag, then FLOTILLA_*, then the config file, and says where each came from", async () => {
  const dir = await sb.dir();
  const file = join(dir, "coordinator.toml");
  await writeFile(file, 'listen = "127.0.0.1:7001"\ndata_dir = "/from/file"\nkeepalive_ms = 1234\n');
  const r = await sb.run(
    ["coordinator", "--config", file, "--data-dir", "/from/flag", "--print-config"],
    { FLOTILLA_LISTEN: "127.0.0.1:7002" },
  );
  expect(r.code).toBe(0);
  const line = (key: string) => r.stdout.split("\n").find((l) => l.startsWith(`${key} =`)) ?? "";
  expect(line("data_dir")).toMatch(/"\/from\/flag".*--data-dir/);
  expect(line("listen")).toMatch(/"127\.0\.0\.1:7002".*FLOTILLA_LISTEN/);
  expect(line("keepalive_ms")).toMatch(/1234.*coordinator\.toml/);
  expect(line("max_message_bytes")).toMatch(/4194304.*default/);
});

it("refuses an invalid option value with one line naming the option", async () => {
  const r = await sb.run(["coordinator", "--listen", "nonsense", "--print-config"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stderr).toMatch(/--listen/);
});

it("refuses an unknown key in the config file", async () => {
  const dir = await sb.dir();
  const file = join(dir, "agent.toml");
  await writeFile(file, 'stat_dir = "/typo"\n');
  const r = await sb.run(["agent", "--config", file, "--print-config"]);
  expect(r.code).not.toBe(0);
  expect(r.stderr).toMatch(/stat_dir/);
});

it("refuses a weak setup code chosen by hand, saying what a strong one needs", async () => {
  for (const code of ["password", "AAAA-AAAA-AAAA-AAAA"]) {
    const r = await sb.run(["coordinator", "--setup-code", code, "--print-config"]);
    expect(r.code, code).not.toBe(0);
    expect(r.stderr.trim().split("\n"), code).toHaveLength(1);
    expect(r.stderr, code).toMatch(/--setup-code.*the setup code (has 8 letters and digits; it needs at least 16|repeats too few different characters)/);
  }
  const strong = await sb.run(["coordinator", "--setup-code", "K7QX-M2RD-9WPA-HT4N", "--print-config"]);
  expect(strong.code, strong.stderr).toBe(0);
});

it("documents --internal-url in `coordinator --help`, and refuses one that cannot work in one line before starting", async () => {
  const help = await sb.run(["coordinator", "--help"]);
  expect(help.code).toBe(0);
  expect(help.stdout).toMatch(/--internal-url <value>\s+where the other replicas on the database/);
  expect(help.stdout).toContain("[FLOTILLA_INTERNAL_URL]");
  const cases: [string[], RegExp][] = [
    [["--internal-url", "https://10.0.0.5:7700/x"], /^error: invalid value for --internal-url \(flag\): .*without a path, query or fragment$/],
    [["--listen", "0.0.0.0:7700", "--internal-url", "http://10.0.0.5:7700"], /^error: --internal-url http:\/\/10\.0\.0\.5:7700 is plain HTTP, but this coordinator serves TLS .*: use https:\/\/$/],
    [
      ["--replicas", "2", "--database-url", "postgres://127.0.0.1:1/none", "--listen", "0.0.0.0:7700", "--internal-url", "https://10.0.0.5:7700"],
      /^error: --internal-url with --replicas above 1 names a host without a port \(e\.g\. https:\/\/10\.0\.0\.5\)/,
    ],
  ];
  for (const [args, message] of cases) {
    const r = await sb.run(["coordinator", "--data-dir", await sb.dir(), ...args]);
    expect(r.code, args.join(" ")).not.toBe(0);
    expect(r.stderr.trim().split("\n"), args.join(" ")).toHaveLength(1);
    expect(r.stderr.trim(), args.join(" ")).toMatch(message);
  }
});
