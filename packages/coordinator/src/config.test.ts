import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "@flotilla/protocol";
import { coordinatorOptionSpecs, internalUrlConflict, withDefaults } from "./config.ts";

const load = (flags: Record<string, unknown>, env: Record<string, string> = {}) => loadConfig(coordinatorOptionSpecs, { flags, env });

/** The one-line error loading `--internal-url url` gives, or undefined when it loads. */
function refusal(url: string): string | undefined {
  try {
    load({ internalUrl: url });
    return undefined;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return err.message;
  }
}

describe("--internal-url", () => {
  it("takes an http(s) URL with a host and an optional port, from the flag or FLOTILLA_INTERNAL_URL", () => {
    for (const url of ["https://10.0.0.5:7700", "http://127.0.0.1:7701", "https://coord-a.internal", "https://[fd00::5]:7700", "https://coord-a:7700/"]) {
      expect(refusal(url), url).toBeUndefined();
    }
    expect(load({}, { FLOTILLA_INTERNAL_URL: "https://10.0.0.5:7700" }).values.internalUrl).toBe("https://10.0.0.5:7700");
    expect(load({}).values.internalUrl).toBeUndefined();
  });

  it("is internal_url in the config file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "flotilla-config-"));
    try {
      const file = join(dir, "coordinator.toml");
      await writeFile(file, 'internal_url = "https://10.0.0.5:7700"\n');
      const loaded = loadConfig(coordinatorOptionSpecs, { flags: {}, env: {}, configFile: file });
      expect(loaded.values.internalUrl).toBe("https://10.0.0.5:7700");
      expect(loaded.sources.internalUrl).toBe("file");
      await writeFile(file, 'internal_url = "https://10.0.0.5:7700/x"\n');
      expect(() => loadConfig(coordinatorOptionSpecs, { flags: {}, env: {}, configFile: file })).toThrow(/^invalid value for internal_url \(config file .*\): .*without a path/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("refuses anything else in one line naming the option and saying what it expects", () => {
    const cases: [string, RegExp][] = [
      ["10.0.0.5:7700", /expected http\(s\):\/\/host or http\(s\):\/\/host:port/],
      ["ftp://10.0.0.5", /not ftp:\/\//],
      ["https://10.0.0.5:7700/tunnels", /without a path, query or fragment/],
      ["https://10.0.0.5:7700?x=1", /without a path, query or fragment/],
      ["https://10.0.0.5:7700#x", /without a path, query or fragment/],
      ["https://user:pw@10.0.0.5:7700", /without a user or password/],
      ["https://10.0.0.5 :7700", /without spaces/],
      ["https://0.0.0.0:7700", /0\.0\.0\.0 is where a server listens, not an address other replicas can dial/],
      ["https://[::]:7700", /\[::\] is where a server listens/],
    ];
    for (const [url, why] of cases) {
      const message = refusal(url);
      expect(message, url).toMatch(/^invalid value for --internal-url \(flag\): /);
      expect(message, url).toMatch(why);
      expect(message!.split("\n"), url).toHaveLength(1);
    }
  });

  it("must use the scheme the coordinator serves: https with TLS (any address but loopback, or --tls-cert), http on loopback", () => {
    const conflict = (o: Partial<Parameters<typeof internalUrlConflict>[0]>) => internalUrlConflict(withDefaults({ dataDir: "d", listen: "127.0.0.1:7700", ...o }));
    expect(conflict({})).toBeUndefined();
    expect(conflict({ internalUrl: "http://127.0.0.1:7700" })).toBeUndefined();
    expect(conflict({ internalUrl: "https://127.0.0.1:7700" })).toMatch(/is HTTPS, but this coordinator serves plain HTTP .*: use http:\/\//);
    expect(conflict({ listen: "0.0.0.0:7700", internalUrl: "https://10.0.0.5:7700" })).toBeUndefined();
    expect(conflict({ listen: "[::]:7700", internalUrl: "http://10.0.0.5:7700" })).toMatch(/is plain HTTP, but this coordinator serves TLS .*: use https:\/\//);
    expect(conflict({ tlsCert: "c.pem", tlsKey: "k.pem", internalUrl: "https://coord-a:7700" })).toBeUndefined();
    expect(conflict({ listen: "[::1]:7700", internalUrl: "HTTP://[::1]:7700" })).toBeUndefined();
  });

  it("with --replicas above 1 names a host without a port: each worker adds its own", () => {
    const conflict = (internalUrl: string, replicas: number) =>
      internalUrlConflict(withDefaults({ dataDir: "d", listen: "0.0.0.0:7700", internalUrl, replicas }));
    expect(conflict("https://10.0.0.5", 4)).toBeUndefined();
    expect(conflict("https://[fd00::5]", 2)).toBeUndefined();
    expect(conflict("https://10.0.0.5:7700", 1)).toBeUndefined();
    expect(conflict("https://10.0.0.5:7700", 2)).toBe(
      "--internal-url with --replicas above 1 names a host without a port (e.g. https://10.0.0.5): each replica is reached on a port of its own",
    );
    // The scheme's own port written out is a port too.
    expect(conflict("https://10.0.0.5:443", 2)).toMatch(/names a host without a port/);
    expect(conflict("https://[fd00::5]:7700/", 2)).toMatch(/\(e\.g\. https:\/\/\[fd00::5\]\)/);
  });
});
